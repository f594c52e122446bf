"""Register a labelled (or validation) segmentation set: image folder + label-map folder.

Every image must have a label map of the same size whose values are class indices
(0 .. C-1, index = position in ``classes``) or the ignore label 255; palette PNGs (PASCAL
VOC) are read as their indices. The key is the content: the listing (names and sizes) of
both folders, the class names and suffixes. Every problem names the file it concerns.
"""

from __future__ import annotations

import io
import json
import posixpath

import fsspec
from fsspec.implementations.local import LocalFileSystem
import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from selftrain.stage import get_store
from storage.keys import digest_json
from storage.masks import IGNORE_LABEL
from storage.store import ArtifactRef
from tasks.register_dataset import DatasetError

STAGE, VERSION = "seg_dataset", 1


def _listing(url: str, suffix: str) -> dict[str, tuple[str, int]]:
    """stem (path relative to the folder, without suffix) -> (uri, size)."""
    fs, root = fsspec.core.url_to_fs(url)
    if not fs.isdir(root):
        raise DatasetError(f"folder {url} does not exist")
    out = {}
    for path, info in fs.find(root, detail=True).items():
        if path.endswith(suffix):
            rel = posixpath.relpath(path, root.rstrip("/") or "/")
            uri = path if isinstance(fs, LocalFileSystem) else fs.unstrip_protocol(path)
            out[rel[: -len(suffix)]] = (uri, int(info.get("size") or 0))
    return out


def check_label_map(raw: bytes, name: str, num_classes: int, image_size: tuple[int, int] | None) -> dict[int, int]:
    """Decode one label map, check its values and size; returns pixel counts per value."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(raw)) as im:
            if im.mode not in ("L", "P", "I", "I;16"):
                raise DatasetError(f"label map {name} has mode {im.mode}: expected one channel of class indices")
            arr = np.array(im)
    except DatasetError:
        raise
    except Exception as exc:  # noqa: BLE001 - an unreadable file is reported with its name
        raise DatasetError(f"label map {name} cannot be read: {type(exc).__name__}: {exc}") from exc
    if image_size is not None and (arr.shape[1], arr.shape[0]) != image_size:
        raise DatasetError(f"label map {name} is {arr.shape[1]}x{arr.shape[0]} but its image is "
                           f"{image_size[0]}x{image_size[1]}")
    values, counts = np.unique(arr, return_counts=True)
    bad = [int(v) for v in values if v >= num_classes and v != IGNORE_LABEL]
    if bad:
        raise DatasetError(f"label map {name} has values {bad} outside the {num_classes} classes "
                           f"(0..{num_classes - 1}) and the ignore label {IGNORE_LABEL}")
    return {int(v): int(c) for v, c in zip(values, counts)}


def _image_size(raw: bytes, name: str) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(raw)) as im:
            return im.size
    except Exception as exc:  # noqa: BLE001
        raise DatasetError(f"image {name} cannot be read: {type(exc).__name__}: {exc}") from exc


@task(name="register_seg_dataset", cache_policy=NO_CACHE)
def register_seg_dataset(store_url: str, dataset: str, img_dir: str, ann_dir: str, classes: list[str],
                         role: str, img_suffix: str = ".jpg", seg_map_suffix: str = ".png") -> ArtifactRef:
    """Validate an (image, label map) folder pair at any fsspec URL; store its pair list."""
    store = get_store(store_url)
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise DatasetError(f"{role}: classes must be at least two distinct names (background first), got {classes}")
    if len(classes) > IGNORE_LABEL:
        raise DatasetError(f"{role}: at most {IGNORE_LABEL} classes (255 is the ignore label)")
    images, maps = _listing(img_dir, img_suffix), _listing(ann_dir, seg_map_suffix)
    if not images:
        raise DatasetError(f"{role}: no images ending in {img_suffix} under {img_dir}")
    missing = sorted(set(images) - set(maps))
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise DatasetError(f"{role}: {len(missing)} image(s) have no label map ({seg_map_suffix}) under {ann_dir}: "
                           f"{missing[:5]}{more}")
    listing = {stem: [images[stem][1], maps[stem][1]] for stem in sorted(images)}
    ref = store.stage_ref(dataset, STAGE, VERSION, "", {"listing": digest_json(listing)},
                          {"img_dir": img_dir, "ann_dir": ann_dir, "classes": list(classes),
                           "img_suffix": img_suffix, "seg_map_suffix": seg_map_suffix})
    if store.has(ref):
        return ref
    pixels = np.zeros(len(classes), dtype=np.int64)
    pairs = []
    for stem in sorted(images):
        img_uri, map_uri = images[stem][0], maps[stem][0]
        with fsspec.open(img_uri, "rb") as f:
            size = _image_size(f.read(), img_uri)
        with fsspec.open(map_uri, "rb") as f:
            counts = check_label_map(f.read(), map_uri, len(classes), size)
        for v, c in counts.items():
            if v < len(classes):
                pixels[v] += c
        pairs.append({"image_id": stem, "img_path": img_uri, "seg_map_path": map_uri,
                      "width": size[0], "height": size[1]})
    meta = {"role": role, "task": "segmentation", "img_dir": img_dir, "ann_dir": ann_dir, "classes": list(classes),
            "num_images": len(pairs), "class_pixels": {c: int(n) for c, n in zip(classes, pixels)}}
    store.write(ref, {"pairs.json": json.dumps(pairs).encode()}, meta=meta)
    return ref
