"""What registration checks of users' images, shared by the COCO and the segmentation
registration stages: decoding exactly as training does, EXIF orientation, degenerate sizes,
and the one reader and checker of label-map files (registration, imported corrections and the
report's ground-truth diagnostic)."""

from __future__ import annotations

from typing import Any

# Pillow modes of a label map with one channel of class values (grayscale, palette, 1-bit, 16/32-bit)
LABEL_MAP_MODES = ("1", "L", "P", "I", "I;16")


class DatasetError(ValueError):
    """A registered set is unusable; the message names the file and the item."""


def exif_orientation(raw: bytes) -> int:
    """The EXIF orientation tag of an image file (1..8; 1 = as stored, also when absent)."""
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(raw)) as im:
            return int(im.getexif().get(0x0112, 1))
    except Exception:  # noqa: BLE001 - only used to explain a size mismatch
        return 1


def decode_as_training(raw: bytes):
    """The H x W x 3 uint8 BGR array training sees for an image file: mmcv's ``imfrombytes``
    with OpenCV in colour mode, as mmdet / mmseg's LoadImageFromFile (EXIF orientation applied;
    16-bit, grayscale, RGBA and CMYK read as 8-bit BGR). None when the bytes do not decode."""
    import mmcv

    return mmcv.imfrombytes(raw, flag="color", backend="cv2")


def decoded_size(raw: bytes, name: str) -> tuple[int, int]:
    """(width, height) of an image exactly as training decodes it: mmcv's ``imfrombytes`` with
    OpenCV in colour mode (as mmdet / mmseg's LoadImageFromFile), which applies the EXIF
    orientation and reads 16-bit, grayscale, RGBA and CMYK files as 8-bit BGR.

    Raises DatasetError naming ``name`` when the bytes do not decode."""
    try:
        img = decode_as_training(raw)
    except Exception as exc:  # noqa: BLE001 - reported with the file's name
        raise DatasetError(f"image {name} cannot be decoded: {type(exc).__name__}: {exc}") from exc
    if img is None or img.size == 0:
        raise DatasetError(f"image {name} cannot be decoded (empty or not an image)")
    return int(img.shape[1]), int(img.shape[0])


def read_label_map(raw: bytes, name: str):
    """The (H, W) integer array of a label-map file, decoded as mmseg's LoadAnnotations decodes
    it (Pillow, unchanged): a palette PNG (PASCAL VOC) as its indices, a 1-bit PNG as 0 / 1
    (uint8, not bool), 16-bit files as their values (wider than uint8). No label map is applied
    and no value is checked here.

    Raises DatasetError naming ``name``: unreadable bytes, or a mode with more than one channel
    (RGB, RGBA, LA: a colour-coded mask, or class indices saved as RGB, which mmseg would read as
    three channels; save class indices as one channel)."""
    import io

    import numpy as np
    from PIL import Image

    try:
        with Image.open(io.BytesIO(raw)) as im:
            if im.mode not in LABEL_MAP_MODES:
                raise DatasetError(
                    f"label map {name} has mode {im.mode}: expected one channel of class indices "
                    "(a grayscale, palette or 1-bit PNG); convert a colour-coded mask to class indices, "
                    "and save indices stored as RGB as one channel (e.g. PIL's Image.convert('L'))"
                )
            arr = np.array(im)
    except DatasetError:
        raise
    except Exception as exc:  # noqa: BLE001 - an unreadable file is reported with its name
        from PIL import UnidentifiedImageError

        if isinstance(exc, UnidentifiedImageError):  # its text names a BytesIO object, not the file
            what = "empty" if not raw else f"not an image format PIL reads (it starts with {raw[:8]!r})"
            raise DatasetError(f"label map {name} cannot be read: it is {what}") from exc
        raise DatasetError(f"label map {name} cannot be read: {type(exc).__name__}: {exc}") from exc
    return arr.astype(np.uint8) if arr.dtype == bool else arr


MAX_ASPECT = 50.0


def degenerate(name: str, size: tuple[int, int]) -> str | None:
    """The error text for an image too thin to train or evaluate on, else None: an aspect ratio
    over MAX_ASPECT (models resize every image to a fixed scale; a 600x1 image's short side
    becomes 0 px and OpenCV's resize fails inside training)."""
    w, h = size
    if max(w, h) / max(min(w, h), 1) > MAX_ASPECT:
        return (
            f"image {name} is {w}x{h}: too thin to train or evaluate on (an aspect ratio over {MAX_ASPECT:g}:1 "
            "vanishes when models resize it); remove it from the set"
        )
    return None


def orientation_note(files: list[str], orientations: list[int]) -> str | None:
    """The normalisation note for images with an EXIF orientation (other than 1): their
    annotations are taken in the displayed frame, as training decodes them."""
    rotated = [(f, o) for f, o in zip(files, orientations) if o not in (1, 0)]
    if not rotated:
        return None
    examples = ", ".join(f"{f} ({o})" for f, o in rotated[:5])
    return (
        f"{len(rotated)} image(s) carry an EXIF orientation, e.g. {examples}: training decodes them rotated or "
        "mirrored as a viewer shows them, so their annotations are taken in that displayed frame"
    )


def unreadable_note(unreadable: list[str]) -> str:
    """' (N sub-folder(s) or file(s) there cannot be read: [...])' for an error about missing
    files, when the listing (storage.listing.list_files' ``unreadable``) skipped some; else ''."""
    if not unreadable:
        return ""
    return f" ({len(unreadable)} sub-folder(s) or file(s) there cannot be read: {unreadable[:3]})"


def size_mismatch(name: str, declared: tuple[int, int], raw: bytes, decoded: tuple[int, int]) -> str | None:
    """The error text when an image's declared size differs from its decoded size, else None."""
    if declared == decoded:
        return None
    orientation = exif_orientation(raw)
    if orientation in (5, 6, 7, 8) and declared == (decoded[1], decoded[0]):
        return (
            f"image {name} is stored {declared[0]}x{declared[1]} with EXIF orientation {orientation}, so "
            f"training decodes it rotated to {decoded[0]}x{decoded[1]}, but the annotations say "
            f"{declared[0]}x{declared[1]}: apply the rotation to the pixels (e.g. PIL ImageOps.exif_transpose) "
            "and to the annotations, or remove the EXIF orientation tag if the annotations are in stored pixels"
        )
    return f"image {name} decodes as {decoded[0]}x{decoded[1]} but the annotations say {declared[0]}x{declared[1]}" + (
        f" (EXIF orientation {orientation})" if orientation != 1 else ""
    )


def check_label_map(
    raw: bytes, name: str, num_classes: int, image_size: tuple[int, int] | None, label_map: dict[int, int] | None = None
) -> dict[int, int]:
    """Decode one label map (read_label_map, as mmseg's LoadAnnotations does) and check it
    (check_label_values); returns pixel counts per (mapped) value. Raises DatasetError naming
    ``name``: unreadable, more than one channel, or check_label_values' refusals."""
    return check_label_values(read_label_map(raw, name), name, num_classes, image_size, label_map)


def check_label_values(
    arr: Any, name: str, num_classes: int, image_size: tuple[int, int] | None, label_map: dict[int, int] | None = None
) -> dict[int, int]:
    """Check a decoded label map (H, W): its size against ``image_size`` (width, height), its
    values - after ``label_map`` - against 0..num_classes-1 and 255; returns pixel counts per
    (mapped) value. For callers that keep the array, so the file is decoded once. Raises
    DatasetError naming ``name``."""
    if image_size is not None and (arr.shape[1], arr.shape[0]) != image_size:
        raise DatasetError(
            f"label map {name} is {arr.shape[1]}x{arr.shape[0]} but its image is "
            f"{image_size[0]}x{image_size[1]} (as training decodes it, EXIF orientation applied)"
        )
    import numpy as np

    from storage.masks import IGNORE_LABEL

    values, counts = np.unique(arr.astype(np.int64), return_counts=True)
    wide = [int(v) for v in values if v > 255 or v < 0]
    if wide:
        raise DatasetError(
            f"label map {name} holds values {wide[:5]} outside 0..255: mmseg reads label maps as "
            "8-bit (a 16-bit value would wrap around), so store class indices (0..255) in the file"
        )
    mapped: dict[int, int] = {}
    for v, c in zip(values.tolist(), counts.tolist()):
        m = (label_map or {}).get(v, v)
        mapped[m] = mapped.get(m, 0) + c
    bad = sorted(v for v in mapped if v >= num_classes and v != IGNORE_LABEL)
    if bad:
        hint = f"; if {bad[0]} marks a class, map it with label_map, e.g. {{{bad[0]}: 1}}" if len(bad) == 1 else ""
        raise DatasetError(
            f"label map {name} has values {bad} outside the {num_classes} classes "
            f"(0..{num_classes - 1}) and the ignore label {IGNORE_LABEL}"
            + (" after label_map" if label_map else "")
            + hint
        )
    return mapped
