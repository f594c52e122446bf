"""Composition: pasting cut-outs onto backgrounds, the pixel rule of every mask."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from selftrain.datasets.composed_seg.sources import BG_CROP, MAX_OUTSIDE

# ----------------------------------------------------------------------------------------------------------
# Composition
# ----------------------------------------------------------------------------------------------------------


def paste_cutout(
    image: np.ndarray, mask: np.ndarray, cutout: np.ndarray, class_id: int, x: int, y: int
) -> tuple[np.ndarray, np.ndarray]:
    """Paste an RGBA cut-out with its top-left corner at ``(x, y)`` (may lie partly outside); new arrays.

    ``image`` (H, W, 3) uint8, ``mask`` (H, W) uint8, ``cutout`` (h, w, 4) uint8. RGB:
    ``(fg * a + bg * (255 - a) + 127) // 255``; mask: ``class_id`` where ``a > 127``, unchanged elsewhere.
    """
    image, mask, cutout = np.asarray(image), np.asarray(mask), np.asarray(cutout)
    if image.ndim != 3 or image.shape[2] != 3 or mask.shape != image.shape[:2]:
        raise ValueError(f"image must be (H, W, 3) and mask (H, W), got {image.shape} and {mask.shape}")
    if cutout.ndim != 3 or cutout.shape[2] != 4:
        raise ValueError(f"cutout must be (h, w, 4) RGBA, got {cutout.shape}")
    image, mask = image.copy(), mask.copy()
    height, width = mask.shape
    h, w = cutout.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
    if x0 >= x1 or y0 >= y1:
        return image, mask
    part = cutout[y0 - y : y1 - y, x0 - x : x1 - x]
    alpha = part[..., 3:4].astype(np.uint32)
    bg = image[y0:y1, x0:x1].astype(np.uint32)
    image[y0:y1, x0:x1] = (part[..., :3].astype(np.uint32) * alpha + bg * (255 - alpha) + 127) // 255
    region = mask[y0:y1, x0:x1]
    region[part[..., 3] > 127] = class_id
    return image, mask


def _load_cutout(path: str) -> np.ndarray:
    """RGBA array of a cut-out cropped to the bounding box of its non-transparent pixels."""
    from PIL import Image

    with Image.open(path) as im:
        rgba = np.asarray(im.convert("RGBA"))
    ys, xs = np.nonzero(rgba[..., 3])
    if len(ys) == 0:
        raise ValueError(f"{path} is fully transparent")
    return rgba[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


def _load_background(path: str, size: int) -> np.ndarray:
    """RGB array of a background photo, reduced (JPEG draft, then Lanczos) to a shorter side of ``4 * size``."""
    from PIL import Image

    target = 4 * size
    with Image.open(path) as photo:
        if photo.format == "JPEG":
            scale = target / min(photo.size)
            photo.draft("RGB", (int(photo.size[0] * scale) + 1, int(photo.size[1] * scale) + 1))
        im = photo.convert("RGB")
        if min(im.size) > target:
            scale = target / min(im.size)
            im = im.resize(
                (max(target, round(im.size[0] * scale)), max(target, round(im.size[1] * scale))),
                Image.Resampling.LANCZOS,
            )
        return np.asarray(im)


def _resize_rgba(rgba: np.ndarray, width: int, height: int) -> np.ndarray:
    from PIL import Image

    # Pillow resizes RGBA on premultiplied alpha, so transparent pixels' colours do not bleed in.
    return np.asarray(Image.fromarray(rgba, "RGBA").resize((width, height), Image.Resampling.LANCZOS))


def compose_image(
    rng: np.random.Generator,
    background: np.ndarray,
    cutouts: Mapping[int, Sequence[np.ndarray]],
    primary: int,
    *,
    size: int,
    num_objects: int,
    scale: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray]:
    """One ``(image (size, size, 3), mask (size, size))``; ``cutouts`` maps class id -> RGBA cut-outs.

    The rules are in the module docstring (step 1-3): the ``num_objects - 1`` other objects are pasted
    first, the ``primary`` class last and fully inside the image.
    """
    from PIL import Image

    bh, bw = background.shape[:2]
    side = max(1, int(round(rng.uniform(*BG_CROP) * min(bh, bw))))
    top, left = int(rng.integers(0, bh - side + 1)), int(rng.integers(0, bw - side + 1))
    crop = Image.fromarray(np.ascontiguousarray(background[top : top + side, left : left + side]))
    image = np.asarray(crop.resize((size, size), Image.Resampling.BILINEAR))
    if rng.random() < 0.5:
        image = image[:, ::-1]
    image = np.ascontiguousarray(image)
    mask = np.zeros((size, size), dtype=np.uint8)
    class_ids = sorted(cutouts)
    classes = [int(rng.choice(class_ids)) for _ in range(num_objects - 1)] + [primary]
    for k, cls in enumerate(classes):
        pool = cutouts[cls]
        rgba = pool[int(rng.integers(len(pool)))]
        longer = max(4, int(round(rng.uniform(*scale) * size)))
        f = longer / max(rgba.shape[:2])
        w, h = max(1, int(round(rgba.shape[1] * f))), max(1, int(round(rgba.shape[0] * f)))
        obj = _resize_rgba(rgba, w, h)
        if rng.random() < 0.5:
            obj = obj[:, ::-1]
        if k == len(classes) - 1:  # primary: fully inside, on top
            x, y = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
        else:
            ox, oy = int(MAX_OUTSIDE * w), int(MAX_OUTSIDE * h)
            x, y = int(rng.integers(-ox, size - w + ox + 1)), int(rng.integers(-oy, size - h + oy + 1))
        image, mask = paste_cutout(image, mask, obj, cls, x, y)
    return image, mask
