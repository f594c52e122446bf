"""Preparing a split: a reproducible folder of composed images and masks, built once per parameter set."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from dataclasses import dataclass

import numpy as np

from selftrain.datasets.common import start_build, swap_into_place
from selftrain.datasets.composed_seg.compose import _load_background, _load_cutout, compose_image
from selftrain.datasets.composed_seg.sources import (
    _PNG,
    CLASSES,
    FORMAT_VERSION,
    PALETTE,
    SPLIT_JSON,
    SPLITS,
    Sources,
    load_sources,
    source_split,
)

# ----------------------------------------------------------------------------------------------------------
# Preparing a split
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SegSplit:
    """Paths of one prepared benchmark (all absolute) and its label set; mmseg ``BaseSegDataset`` layout."""

    root: str
    classes: tuple[str, ...]  # index 0 = "background"
    palette: tuple[tuple[int, int, int], ...]
    labeled_img_dir: str
    labeled_ann_dir: str
    unlabeled_img_dir: str
    unlabeled_ann_dir: str  # true masks of the unlabeled images: diagnostics only, never for training
    val_img_dir: str
    val_ann_dir: str
    img_suffix: str = ".png"
    seg_map_suffix: str = ".png"

    @classmethod
    def at(cls, root: str) -> SegSplit:
        root = os.path.abspath(root)
        dirs = {f"{s}_{k}_dir": os.path.join(root, s, k) for s in SPLITS for k in ("img", "ann")}
        return cls(root=root, classes=CLASSES, palette=PALETTE, **dirs)


def read_split(root: str) -> dict | None:
    """The ``split.json`` of a prepared folder, or None when there is none (or it is unreadable)."""
    try:
        with open(os.path.join(root, SPLIT_JSON)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _is_int(value, low: int) -> bool:
    return bool(isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= low)


def _check_params(size, seed, num_labeled, num_unlabeled, num_val, objects_per_image, scale) -> None:
    n_classes = len(CLASSES) - 1
    if not _is_int(size, 16):
        raise ValueError(f"size must be an integer >= 16 (pixels), got {size!r}")
    if not _is_int(seed, 0):
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    for name, value in (("num_labeled", num_labeled), ("num_val", num_val)):
        if not _is_int(value, n_classes):
            raise ValueError(
                f"{name} must be an integer >= the number of classes ({n_classes}: {', '.join(CLASSES[1:])}) "
                f"so that every class appears, got {value!r}"
            )
    if not _is_int(num_unlabeled, 0):
        raise ValueError(f"num_unlabeled must be an integer >= 0, got {num_unlabeled!r}")
    try:
        lo, hi = objects_per_image
    except (TypeError, ValueError):
        raise ValueError(f"objects_per_image must be a pair (min, max), got {objects_per_image!r}") from None
    if not (_is_int(lo, 1) and _is_int(hi, 1) and lo <= hi <= 16):
        raise ValueError(f"objects_per_image must be integers 1 <= min <= max <= 16, got {objects_per_image!r}")
    try:
        s0, s1 = (float(v) for v in scale)
    except (TypeError, ValueError):
        raise ValueError(f"scale must be a pair (min, max), got {scale!r}") from None
    if not 0.0 < s0 <= s1 <= 1.0:
        raise ValueError(f"scale must satisfy 0 < min <= max <= 1 (fraction of the image side), got {scale!r}")


def prepare(
    out_dir: str,
    *,
    size: int = 128,
    seed: int = 0,
    num_labeled: int = 16,
    num_unlabeled: int = 160,
    num_val: int = 48,
    objects_per_image: tuple[int, int] = (1, 3),
    scale: tuple[float, float] = (0.25, 0.70),
    cache_dir: str | None = None,
) -> SegSplit:
    """Compose (or find already composed) the benchmark in ``out_dir``; see the module docstring.

    Reads the sources cached by :func:`fetch_sources` (``cache_dir``, default :func:`default_cache_dir`)
    and never downloads: FileNotFoundError when they are missing.
    """
    _check_params(size, seed, num_labeled, num_unlabeled, num_val, objects_per_image, scale)
    sources = load_sources(cache_dir)
    out_dir = os.path.abspath(os.fspath(out_dir))
    split = SegSplit.at(out_dir)
    chosen = source_split(sources)
    params = {
        "format_version": FORMAT_VERSION,
        "size": int(size),
        "seed": int(seed),
        "num_labeled": int(num_labeled),
        "num_unlabeled": int(num_unlabeled),
        "num_val": int(num_val),
        "objects_per_image": [int(v) for v in objects_per_image],
        "scale": [float(v) for v in scale],
        "classes": list(CLASSES),
        "sources": {
            name: sources.sha256[name]
            for part in chosen.values()
            for name in [*part["backgrounds"], *(n for v in part["cutouts"].values() for n in v)]
        },
    }
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()

    build = start_build(out_dir, digest, read_split)
    if build is None:
        return split
    try:
        counts, content = _build(build, sources, chosen, params)
        info = {
            "digest": digest,
            "content_sha256": content,
            "params": {k: v for k, v in params.items() if k != "sources"},
            "classes": list(CLASSES),
            "palette": [list(c) for c in PALETTE],
            "img_suffix": split.img_suffix,
            "seg_map_suffix": split.seg_map_suffix,
            "packages": dict(sources.packages),
            "sources": chosen,
            "counts": counts,
        }
        with open(os.path.join(build, SPLIT_JSON), "w") as f:  # written last
            json.dump(info, f, indent=1, sort_keys=True)
            f.write("\n")
        swap_into_place(build, out_dir, digest, read_split)
    finally:
        if os.path.exists(build):
            shutil.rmtree(build, ignore_errors=True)
    return split


def _png_bytes(array: np.ndarray, mode: str) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, format="PNG", **_PNG)
    return buf.getvalue()


def _build(build: str, sources: Sources, chosen: dict, params: dict) -> tuple[dict, str]:
    size = params["size"]
    lo, hi = params["objects_per_image"]
    scale = tuple(params["scale"])
    content = hashlib.sha256()
    counts = {}
    bg_cache: dict[str, np.ndarray] = {}  # loaded when first drawn
    pools: dict[str, dict[int, list[np.ndarray]]] = {}  # "train"/"val" -> class id -> cut-outs
    for split_index, (split_name, number) in enumerate(
        zip(SPLITS, (params["num_labeled"], params["num_unlabeled"], params["num_val"]))
    ):
        which = "val" if split_name == "val" else "train"
        part = chosen[which]
        if which not in pools:
            pools[which] = {
                i: [_load_cutout(sources.path(n)) for n in part["cutouts"][cls]]
                for i, cls in enumerate(CLASSES)
                if i > 0
            }
        cutouts = pools[which]
        img_dir, ann_dir = os.path.join(build, split_name, "img"), os.path.join(build, split_name, "ann")
        os.makedirs(img_dir)
        os.makedirs(ann_dir)
        pixels = np.zeros(len(CLASSES), dtype=np.int64)
        images_with = np.zeros(len(CLASSES), dtype=np.int64)
        for i in range(number):
            rng = np.random.default_rng([params["seed"], split_index, i])
            bg_name = part["backgrounds"][int(rng.integers(len(part["backgrounds"])))]
            if bg_name not in bg_cache:
                bg_cache[bg_name] = _load_background(sources.path(bg_name), size)
            image, mask = compose_image(
                rng,
                bg_cache[bg_name],
                cutouts,
                1 + i % (len(CLASSES) - 1),
                size=size,
                num_objects=int(rng.integers(lo, hi + 1)),
                scale=scale,
            )
            hist = np.bincount(mask.ravel(), minlength=len(CLASSES))
            pixels += hist
            images_with += hist > 0
            stem = f"{split_name}_{i:05d}"
            for folder, data in ((img_dir, _png_bytes(image, "RGB")), (ann_dir, _png_bytes(mask, "L"))):
                with open(os.path.join(folder, stem + ".png"), "wb") as f:
                    f.write(data)
                content.update(
                    f"{os.path.basename(os.path.dirname(folder))}/{os.path.basename(folder)}/{stem}".encode()
                    + hashlib.sha256(data).digest()
                )
        counts[split_name] = {
            "images": number,
            "pixels": {c: int(p) for c, p in zip(CLASSES, pixels)},
            "images_with": {c: int(n) for c, n in zip(CLASSES, images_with)},
        }
    return counts, content.hexdigest()
