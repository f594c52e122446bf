"""Reviewed pseudo masks back as labeled data (segmentation): a folder of corrected label maps -
the PNGs `selftrain export --format png` wrote, after a person fixed them - joined with the
labeled set into one segmentation set, so that the next run trains its teacher on both and
pseudo-labels only the images that are still unlabeled.

The merged set is laid out as mmseg reads a set with a split file (``ann_file``), written under
a new folder ``out``:

- ``img_dir``: the deepest folder holding the labeled and the reviewed images. No image is
  copied or re-encoded: the next run's unlabeled listing leaves out the labeled set's images by
  their URI, so the reviewed ones are not pseudo-labeled again;
- ``ann_dir`` = ``<out>/ann``: one PNG label map per image, at the image's path under
  ``img_dir`` with ``.png`` for its suffix: the labeled set's maps written as class indices
  (its ``label_map`` applied, so that the merged set needs none), the reviewed maps as given;
- ``split`` = ``<out>/split.txt``: the images, one per line, as paths under ``img_dir``
  without the suffix, the labeled ones first.

Every reviewed map is checked against the run it came from: its path under the folder, without
``.png``, must be one of the run's unlabeled images without its suffix (as the export names
it); it must be a one-channel label map of its image's size as training decodes it, holding
class indices (0 .. C-1) or the ignore label 255 (selftrain.registration.check_label_map); its
image must not be labeled already and must end with the labeled set's image suffix (the merged
set has one). Each failure is a CorrectionError naming the file; nothing is written then.
"""

from __future__ import annotations

import io
import os
import posixpath
from collections.abc import Callable
from typing import Any

import numpy as np

from selftrain.corrections import CorrectionError, common_root

MAP_SUFFIX = ".png"


def _suffix(pair: dict) -> str:
    """The image suffix of a registered pair: what follows its stem (``image_id``, a path under
    the set's folder) at the end of its URI - derived from the pair alone, so a folder given as
    a URL whose pairs hold local paths (file://) cannot shift it."""
    path, tail = pair["img_path"], "/" + pair["image_id"]
    at = path.rfind(tail)  # the last: a suffix holds no '/', so no later '/<stem>' can start in it
    if at < 0 or "/" in path[at + len(tail) :]:
        raise CorrectionError(f"the labeled image {path} does not end with its name {pair['image_id']!r}")
    return path[at + len(tail) :]


def _under(root: str, uri: str) -> str:
    """``uri``'s path under the folder ``root`` (both local, or both URLs of one bucket)."""
    strip = (lambda u: u.split("://", 1)[1]) if "://" in root else os.path.abspath
    return posixpath.relpath(strip(uri), strip(root))


def reviewed_maps(folder: str, unlabeled: dict[str, str], labeled: set[str]) -> tuple[dict[str, str], list[str]]:
    """image id -> path of each reviewed label map under ``folder`` (local; found
    recursively), and notes on the files left out. ``unlabeled``: the run's image id -> URI;
    ``labeled``: the labeled set's image URIs. Hidden files (a name starting with '.', e.g.
    macOS's ``._x.png``) and files that are not ``.png`` are left out and noted. A ``.png``
    that names no unlabeled image (``<image id without its suffix>.png``, its path under the
    folder included) - or an image of the labeled set, reviewed in an earlier round - or two
    images sharing that name, is a CorrectionError naming the file."""
    if not os.path.isdir(folder):
        raise CorrectionError(f"{folder}: reviewed label maps are read from a folder (as the png export wrote them)")
    from selftrain.export import ExportError, label_map_name

    by_stem: dict[str, list[str]] = {}
    for image_id in unlabeled:
        try:
            by_stem.setdefault(label_map_name(image_id)[: -len(MAP_SUFFIX)], []).append(image_id)
        except ExportError:
            continue  # never exported

    found: dict[str, str] = {}
    hidden: list[str] = []
    others: list[str] = []
    for top, dirs, files in os.walk(folder):
        hidden += [os.path.join(top, d) for d in dirs if d.startswith(".")]
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = os.path.join(top, name)
            if name.startswith("."):
                hidden.append(path)
                continue
            if not name.lower().endswith(MAP_SUFFIX):
                others.append(path)
                continue
            stem = posixpath.relpath(path, folder).replace(os.sep, "/")[: -len(MAP_SUFFIX)]
            ids = by_stem.get(stem, [])
            if not ids:
                if any(posixpath.splitext(u)[0].endswith("/" + stem) for u in labeled):
                    raise CorrectionError(
                        f"{path}: its image is in the labeled set already (reviewed in an earlier round?); "
                        "leave it out of the folder"
                    )
                raise CorrectionError(
                    f"{path}: names no unlabeled image of the run (a reviewed label map keeps the name the "
                    f"export gave it, its path under the folder included: <image id without its suffix>{MAP_SUFFIX})"
                )
            if len(ids) > 1:
                raise CorrectionError(f"{path}: names {len(ids)} unlabeled images ({ids[:3]}); it cannot say which")
            found[ids[0]] = path
    notes = []
    if hidden:
        notes.append(f"{len(hidden)} hidden file(s) or folder(s) left out, e.g. {hidden[0]}")
    if others:
        notes.append(f"{len(others)} file(s) that are not {MAP_SUFFIX} label maps left out, e.g. {others[0]}")
    if not found:
        left = f" ({'; '.join(notes)})" if notes else ""
        raise CorrectionError(f"{folder}: no reviewed label map ({MAP_SUFFIX}) in the folder{left}")
    return found, notes


def _png(label: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(label.astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _check_reviewed(
    maps: dict[str, str],
    images: dict[str, str],
    img_suffix: str,
    num_classes: int,
    labels: Any,
    reviewed: dict[str, np.ndarray],
) -> int:
    """Check each reviewed map (image id -> path) and put it in ``reviewed`` (image URI -> label
    map); returns how many equal the exported pseudo mask (``labels``: a PseudoMaskSet or
    None). CorrectionError names the file that does not fit."""
    from selftrain.registration import DatasetError, check_label_values, decoded_size, read_label_map
    from storage.listing import read_url

    masks = labels.masks if labels is not None else {}
    unchanged = 0
    for image_id, path in maps.items():  # the listing leaves labeled images out; reviewed_maps named them
        uri = images[image_id]
        if not uri.lower().endswith(img_suffix.lower()):
            raise CorrectionError(
                f"{path}: image {image_id!r} does not end with the labeled set's image suffix {img_suffix!r}; "
                "the merged set has one suffix (convert the image, or register both sets with one format)"
            )
        try:
            size = decoded_size(read_url(uri), uri)
            with open(path, "rb") as f:
                raw = f.read()
            label = read_label_map(raw, path)
            check_label_values(label, path, num_classes, size)
        except (OSError, DatasetError) as exc:
            raise CorrectionError(f"{path} (image {image_id!r}): {exc}") from exc
        label = label.astype(np.uint8)
        unchanged += image_id in masks and np.array_equal(masks[image_id], label)
        reviewed[uri] = label
    return unchanged


def _write_atomically(out: str, files: dict[str, bytes], stems: list[str]) -> None:
    """``out``/ann/<name> for each of ``files`` and ``out``/split.txt listing ``stems``, written
    in a temporary folder beside ``out`` and renamed into place: a failure (a full disk) leaves
    no half-written set, and ``out`` stays new or empty for the next attempt."""
    import shutil
    import tempfile

    target = os.path.abspath(out)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    partial = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}-partial-", dir=os.path.dirname(target))
    try:
        for name, data in files.items():
            path = os.path.join(partial, "ann", *name.split("/"))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
        with open(os.path.join(partial, "split.txt"), "w") as f:
            f.write("".join(s + "\n" for s in stems))
        if os.path.isdir(target):
            os.rmdir(target)  # empty (checked before); rename needs it gone
        os.rename(partial, target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def import_mask_corrections(
    store: Any,
    labeled: Any,
    unlabeled: Any,
    folder: str,
    fmt: str,
    out: str,
    pseudo: Callable[[], Any] | None = None,
) -> dict:
    """Merge a folder of reviewed label maps with a run's labeled segmentation set.

    ``labeled``: the run's registered labeled set; ``unlabeled``: its unlabeled listing (both
    ArtifactRefs in ``store``); ``folder``: the reviewed label maps (module docstring); ``out``:
    a new or empty local folder for the merged set's label maps and split file; ``fmt``: 'png';
    ``pseudo``: a callable opening the run's pseudo masks as exported (a PseudoMaskSet, with the
    thresholds of the export), to count the reviewed maps nobody changed. Returns
    {'next_labeled': the next run's ``labeled`` parameters (img_dir, ann_dir, split, classes,
    img_suffix, seg_map_suffix), 'labeled_images', 'added_images', 'images', 'unchanged',
    'notes'}. Raises CorrectionError naming the file that does not fit; nothing is written
    then."""
    from selftrain.diagnostics import apply_label_map
    from selftrain.registration import DatasetError, read_label_map
    from storage.listing import read_url
    from storage.schemas import UNLABELED_IMAGES, read_parquet

    if fmt != "png":
        raise CorrectionError(f"reviewed masks are imported as PNG label maps ('png'), not {fmt!r}")
    meta = store.manifest(labeled).meta
    classes = list(meta["classes"])
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        why = "it holds files" if os.path.isdir(out) else "it is a file"
        raise CorrectionError(f"--out {out}: the merged set goes into a new or empty folder ({why})")
    inside = os.path.abspath(out) + os.sep
    if inside.startswith(os.path.abspath(folder) + os.sep):
        raise CorrectionError(f"--out {out} lies inside the reviewed folder {folder}; write the merged set elsewhere")
    rows = read_parquet(store.read(unlabeled, "images.parquet"), UNLABELED_IMAGES).to_pylist()
    images = {r["image_id"]: r["image_uri"] for r in rows}
    pairs = store.read_json(labeled, "pairs.json")
    already = {p["img_path"] for p in pairs}
    maps, notes = reviewed_maps(folder, images, already)
    suffixes = sorted({_suffix(p) for p in pairs})  # registration matched it in any case
    if len({x.lower() for x in suffixes}) != 1:
        raise CorrectionError(f"the labeled set's images end in {suffixes}; the merged set needs one suffix")
    img_suffix = suffixes[0]

    reviewed: dict[str, np.ndarray] = {}
    labels = pseudo() if pseudo is not None else None
    try:
        unchanged = _check_reviewed(maps, images, img_suffix, len(classes), labels, reviewed)
    finally:
        if labels is not None:
            labels.close()

    root = common_root([*already, *reviewed])
    stems: list[str] = []
    files: dict[str, bytes] = {}
    label_map = meta.get("label_map") or {}
    for p in pairs:  # the labeled maps as class indices, one at a time
        stem = _under(root, p["img_path"])[: -len(img_suffix)]
        try:
            label = read_label_map(read_url(p["seg_map_path"]), p["seg_map_path"])
        except (OSError, DatasetError) as exc:
            raise CorrectionError(f"the labeled set's label map {p['seg_map_path']} cannot be read: {exc}") from exc
        files[stem + MAP_SUFFIX] = _png(apply_label_map(label, label_map))
        stems.append(stem)
    for uri, label in reviewed.items():
        stem = _under(root, uri)[: -len(img_suffix)]
        files[stem + MAP_SUFFIX] = _png(label)
        stems.append(stem)
    if len(set(stems)) != len(stems):
        raise CorrectionError(f"two images of the merged set share a name under {root}")

    _write_atomically(out, files, stems)
    ann_dir = os.path.join(os.path.abspath(out), "ann")
    split = os.path.join(os.path.abspath(out), "split.txt")
    if label_map:
        notes.append(
            f"the labeled set's label_map {label_map} is applied in the merged label maps, so the merged set "
            "has none: a held-out set that took it from the labeled set must now name it (val.label_map)"
        )
    return {
        "next_labeled": {
            "img_dir": root,
            "ann_dir": ann_dir,
            "split": split,
            "classes": classes,
            "img_suffix": img_suffix,
            "seg_map_suffix": MAP_SUFFIX,
        },
        "labeled_images": len(pairs),
        "added_images": len(reviewed),
        "images": len(stems),
        "unchanged": int(unchanged),
        "notes": notes,
    }
