"""The DeepForest tree-crown benchmark, tiled into COCO detection datasets.

The ``deepforest`` package ships two annotated NEON RGB scenes of Yellowstone (``2019_YELL_2``) in its
``data/`` folder, each a PNG with a Pascal VOC XML file of the same stem (class ``Tree``):

* scene 1, ``2019_YELL_2_528000_4978000_image_crop2`` (2299 x 2472 px, 574 boxes) is cut into tiles that
  become the *labeled* set (a few tiles, chosen by a seeded RNG among tiles with at least one tree) and
  the *unlabeled* set (all other tiles; their true boxes are kept apart for diagnostics only);
* scene 2, ``2019_YELL_2_541000_4977000_image_crop`` (1249 x 1035 px, 279 boxes) is cut into tiles that
  form the held-out *validation* set. These tiles do not overlap, so that evaluation counts every tree
  once (with the training grid below, scene 2's last row starts 11 px below the previous one and its
  279 trees became 348 validation boxes).

Rules (all deterministic):

* Coordinates. VOC boxes are 1-based inclusive integers; they become 0-based pixel-edge coordinates
  ``x1 = xmin - 1, y1 = ymin - 1, x2 = xmax, y2 = ymax``, clipped to the image. Boxes with no area left
  after that are dropped.
* Training grid (:func:`tile_offsets`), scene 1 (labeled and unlabeled tiles). ``ceil(size / tile)``
  tiles per axis at ``0, tile, 2 * tile, ...``; the last one is shifted back so that it ends exactly at the
  image border, so the last two tiles of a row/column overlap a little. An image smaller than ``tile`` on
  an axis gives one tile as large as the image. All tiles have the same size.
* Validation partition (:func:`partition_spans`), scene 2. Tiles per axis at ``0, tile, 2 * tile, ...``
  with no overlap. The remainder ``size % tile`` at the right/bottom edge becomes a tile of its own when it
  is at least ``tile / 2`` pixels, otherwise it is added to the previous tile, which becomes larger than
  ``tile``. So tiles have different sizes: at ``tile=256`` scene 2's rows (1035 = 4 * 256 + 11) are 256,
  256, 256 and 267 px tall and its columns (1249 = 4 * 256 + 225) 256, 256, 256, 256 and 225 px wide:
  4 x 5 = 20 tiles. Each COCO image carries its own ``width`` and ``height``.
* Boxes in a tile (:func:`clip_boxes`). A box is given to a tile when the part of it inside the tile is at
  least ``min_visible`` of its full area; it is then clipped to the tile. A box cut more than that by the
  tile border is **dropped** from that tile (it is usually whole in the neighbouring tile); the tile then
  shows an unannotated tree fragment, which is the usual price of tiling. ``READY.json`` counts the source
  boxes that are in no tile at all (``unassigned_boxes``).
* Boxes in validation tiles: the same rule, and every box in **at most one** tile. With non-overlapping
  tiles a tree cut by a tile border appears in the tile holding at least ``min_visible`` of it, or in no
  tile when no tile holds that much (it is then lost to evaluation, not counted twice). When several tiles
  pass the rule (an exact split at ``min_visible = 0.5``, or any ``min_visible < 0.5``) the box goes only
  to the tile holding the largest part of it, the first in row-major order on a tie
  (:func:`assign_once`); ``READY.json`` counts these boxes (``multi_tile_boxes``). Measured on scene 2 at
  ``tile=256``: with the default ``min_visible=0.5``, 277 of the 279 trees are in a validation tile
  (one of them split exactly in half between two tiles, kept in the first) and 2 are in no tile; with
  ``min_visible`` 0.6 and 1.0, 18 and 62 trees are in no tile; with 0.3 none is lost and 28 pass the
  rule in two tiles.
* Splits. Scene-1 tiles are numbered in row-major order. ``numpy.random.default_rng(seed).choice`` picks
  ``num_labeled`` of the tiles with at least one box (without replacement); the others, in row-major
  order, are the unlabeled tiles (the first ``max_unlabeled`` of them when given). The validation tiles
  are all scene-2 tiles of the partition in row-major order (the first ``max_val`` when given).

Output (``out_dir``)::

    READY.json            parameters, their digest, counts; written last
    labeled.json         COCO, labeled tiles
    unlabeled_gt.json     COCO, the unlabeled tiles' true boxes (diagnostics only, never for training)
    val.json              COCO, validation tiles
    images/{labeled,unlabeled,val}/<scene-stem>_r<row>_c<col>.png

COCO ``file_name`` values are relative to ``images/`` (``image_root``), e.g. ``labeled/<stem>_r3_c4.png``;
``bbox`` is ``[x, y, w, h]`` in pixels with ``(0, 0)`` the top-left corner of the tile's first pixel.
Each image also records the ``source`` scene stem and the tile's ``offset`` ``[x0, y0]`` in that scene.

:func:`prepare` is idempotent and atomic: when ``out_dir/READY.json`` carries the same parameter digest
(which also covers the source files' SHA-256) it returns at once without writing; otherwise it builds in a
temporary sibling folder and renames it into place, replacing an earlier output with other parameters.
A folder that exists but was not written by :func:`prepare` (no ``READY.json``, not empty) is never
replaced: that is an error.

Command line: ``python -m selftrain.datasets.deepforest --out data/deepforest [--tile 256 ...]``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import math
import os
import shutil
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import numpy as np

from selftrain.datasets.common import start_build, swap_into_place

__all__ = [
    "DeepForestSplit",
    "TRAIN_SCENE",
    "VAL_SCENE",
    "assign_once",
    "clip_boxes",
    "deepforest_data_dir",
    "load_scene",
    "partition_spans",
    "prepare",
    "read_ready",
    "tile_offsets",
    "voc_to_pixel_boxes",
]

DATA_PACKAGE = "deepforest"
TRAIN_SCENE = "2019_YELL_2_528000_4978000_image_crop2"
VAL_SCENE = "2019_YELL_2_541000_4977000_image_crop"
CATEGORIES = [{"id": 1, "name": "tree"}]
FORMAT_VERSION = 2  # bump when the output layout or any rule above changes
_INSTALL_HINT = "deploy/setup.sh installs `deepforest` with --no-deps (only its data/ folder is used)"
_EPS = 1e-9


@dataclass(frozen=True)
class DeepForestSplit:
    """Paths of one prepared dataset (all absolute)."""

    root: str  # output folder
    labeled_json: str  # COCO json of labeled tiles (images under root/images/)
    unlabeled_dir: str  # folder of unlabeled tile PNGs (no annotations given to the pipeline)
    unlabeled_gt_json: str  # COCO json with the unlabeled tiles' true boxes (diagnostics only)
    val_json: str  # COCO json of the held-out scene's tiles
    image_root: str  # folder the COCO file_name values are relative to

    @classmethod
    def at(cls, root: str) -> DeepForestSplit:
        root = os.path.abspath(root)
        images = os.path.join(root, "images")
        return cls(
            root=root,
            labeled_json=os.path.join(root, "labeled.json"),
            unlabeled_dir=os.path.join(images, "unlabeled"),
            unlabeled_gt_json=os.path.join(root, "unlabeled_gt.json"),
            val_json=os.path.join(root, "val.json"),
            image_root=images,
        )


# ----------------------------------------------------------------------------------------------------------
# Pure helpers
# ----------------------------------------------------------------------------------------------------------


def tile_offsets(size: int, tile: int) -> list[int]:
    """Start offsets of the tiles covering ``[0, size)`` along one axis.

    ``ceil(size / tile)`` tiles at multiples of ``tile``, the last one moved back to end at ``size``:
    ``tile_offsets(600, 256) == [0, 256, 344]``, ``tile_offsets(512, 256) == [0, 256]``. When
    ``size <= tile`` there is one tile at 0 (as large as the image).
    """
    if size <= 0 or tile <= 0:
        raise ValueError(f"size and tile must be positive, got size={size}, tile={tile}")
    if size <= tile:
        return [0]
    n = math.ceil(size / tile)
    return [i * tile for i in range(n - 1)] + [size - tile]


def partition_spans(size: int, tile: int) -> list[tuple[int, int]]:
    """``(start, length)`` of non-overlapping tiles that cover ``[0, size)`` exactly, along one axis.

    Tiles at ``0, tile, 2 * tile, ...``; the remainder ``r = size % tile`` is a tile of its own when
    ``r >= tile / 2``, otherwise it is added to the previous tile:
    ``partition_spans(1249, 256) == [(0, 256), (256, 256), (512, 256), (768, 256), (1024, 225)]``,
    ``partition_spans(1035, 256) == [(0, 256), (256, 256), (512, 256), (768, 267)]``. When
    ``size < tile`` there is one tile as large as the image.
    """
    if size <= 0 or tile <= 0:
        raise ValueError(f"size and tile must be positive, got size={size}, tile={tile}")
    full, rest = divmod(size, tile)
    if full == 0:
        return [(0, size)]
    spans = [(i * tile, tile) for i in range(full)]
    if rest == 0:
        return spans
    if 2 * rest >= tile:
        return spans + [(full * tile, rest)]
    spans[-1] = (spans[-1][0], tile + rest)
    return spans


def voc_to_pixel_boxes(voc: np.ndarray, width: int, height: int) -> np.ndarray:
    """1-based inclusive VOC ``[xmin, ymin, xmax, ymax]`` -> 0-based ``[x1, y1, x2, y2]`` clipped to the image.

    Boxes with no area left after clipping are dropped. Returns float64 ``(N, 4)``.
    """
    voc = np.asarray(voc, dtype=np.float64).reshape(-1, 4)
    out = np.empty_like(voc)
    out[:, 0] = np.clip(voc[:, 0] - 1, 0, width)
    out[:, 1] = np.clip(voc[:, 1] - 1, 0, height)
    out[:, 2] = np.clip(voc[:, 2], 0, width)
    out[:, 3] = np.clip(voc[:, 3], 0, height)
    keep = (out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])
    return out[keep]


def clip_boxes(
    boxes: np.ndarray, x0: int, y0: int, tile_w: int, tile_h: int, min_visible: float
) -> tuple[np.ndarray, np.ndarray]:
    """The boxes that belong to the tile ``[x0, x0 + tile_w) x [y0, y0 + tile_h)``, in tile coordinates.

    ``boxes`` are image ``[x1, y1, x2, y2]``. A box belongs to the tile when (area inside the tile) /
    (full area) >= ``min_visible`` and the part inside has positive width and height; it is then clipped to
    the tile and shifted by ``(-x0, -y0)``. Boxes with a smaller visible fraction are dropped, as are
    boxes of zero area. Returns ``(clipped (K, 4) float64, indices (K,) of the kept input boxes)``.
    """
    if not 0.0 < min_visible <= 1.0:
        raise ValueError(f"min_visible must be in (0, 1], got {min_visible}")
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    cx1 = np.clip(boxes[:, 0], x0, x0 + tile_w)
    cy1 = np.clip(boxes[:, 1], y0, y0 + tile_h)
    cx2 = np.clip(boxes[:, 2], x0, x0 + tile_w)
    cy2 = np.clip(boxes[:, 3], y0, y0 + tile_h)
    cw, ch = cx2 - cx1, cy2 - cy1
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    inside = np.clip(cw, 0, None) * np.clip(ch, 0, None)
    keep = (cw > 0) & (ch > 0) & (area > 0) & (inside >= min_visible * area - _EPS)
    idx = np.flatnonzero(keep)
    clipped = np.stack([cx1 - x0, cy1 - y0, cx2 - x0, cy2 - y0], axis=1)[idx]
    return clipped, idx


def assign_once(tiles: list[dict], n_boxes: int) -> tuple[list[dict], int]:
    """Keep every box in at most one tile: the one where its clipped part is largest (first on a tie).

    ``tiles`` are dicts with ``boxes`` (clipped ``(K, 4)`` in tile coordinates, so each row's area is the
    part of the box inside the tile) and ``box_ids`` (``(K,)`` indices of the source boxes), in row-major
    order. Returns ``(new tile dicts with only their own boxes, number of boxes that were in > 1 tile)``.
    """
    best_area = np.full(n_boxes, -1.0)
    owner = np.full(n_boxes, -1, dtype=np.int64)
    seen = np.zeros(n_boxes, dtype=np.int64)
    for k, t in enumerate(tiles):
        b = np.asarray(t["boxes"], dtype=np.float64).reshape(-1, 4)
        ids = np.asarray(t["box_ids"], dtype=np.int64)
        areas = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        seen[ids] += 1
        better = areas > best_area[ids]  # strictly larger: a tie stays with the earlier tile
        best_area[ids[better]] = areas[better]
        owner[ids[better]] = k
    out = []
    for k, t in enumerate(tiles):
        ids = np.asarray(t["box_ids"], dtype=np.int64)
        mine = owner[ids] == k
        out.append({**t, "boxes": np.asarray(t["boxes"]).reshape(-1, 4)[mine], "box_ids": ids[mine]})
    return out, int((seen > 1).sum())


# ----------------------------------------------------------------------------------------------------------
# Source data
# ----------------------------------------------------------------------------------------------------------


def deepforest_data_dir(package: str | None = None) -> str:
    """The ``data/`` folder of the installed ``deepforest`` package, found without importing it."""
    package = package or DATA_PACKAGE
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the Python package {package!r} is not installed; {_INSTALL_HINT}")
    path = os.path.join(list(spec.submodule_search_locations)[0], "data")
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path} (the {package} data folder) does not exist; {_INSTALL_HINT}")
    return path


def _source_files(data_dir: str, stem: str) -> tuple[str, str]:
    png, xml = os.path.join(data_dir, stem + ".png"), os.path.join(data_dir, stem + ".xml")
    for path in (png, xml):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} is missing; {_INSTALL_HINT}")
    return png, xml


def load_scene(data_dir: str, stem: str) -> tuple[np.ndarray, np.ndarray]:
    """``(RGB uint8 image (H, W, 3), boxes (N, 4) 0-based [x1, y1, x2, y2])`` of one scene."""
    from PIL import Image

    png, xml = _source_files(data_dir, stem)
    with Image.open(png) as im:
        image = np.asarray(im.convert("RGB"))
    height, width = image.shape[:2]
    root = ET.parse(xml).getroot()
    size = root.find("size")
    if size is not None:
        xw, xh = int(size.findtext("width", "0")), int(size.findtext("height", "0"))
        if (xw, xh) != (width, height):
            raise ValueError(f"{xml} gives size {xw}x{xh} but {png} is {width}x{height}")
    voc = []
    for obj in root.iter("object"):
        bb = obj.find("bndbox")
        if bb is None:
            continue
        voc.append([float(bb.findtext(k) or "nan") for k in ("xmin", "ymin", "xmax", "ymax")])
    return image, voc_to_pixel_boxes(np.array(voc, dtype=np.float64).reshape(-1, 4), width, height)


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------------------
# Building
# ----------------------------------------------------------------------------------------------------------


def _grid_spans(size: int, tile: int) -> list[tuple[int, int]]:
    """The training grid of :func:`tile_offsets` as ``(start, length)`` spans."""
    return [(offset, min(tile, size)) for offset in tile_offsets(size, tile)]


def _tiles(
    image: np.ndarray,
    boxes: np.ndarray,
    stem: str,
    row_spans: list[tuple[int, int]],
    col_spans: list[tuple[int, int]],
    min_visible: float,
) -> list[dict]:
    """All tiles of a scene in row-major order, each with its pixels and clipped boxes."""
    tiles = []
    for r, (y0, th) in enumerate(row_spans):
        for c, (x0, tw) in enumerate(col_spans):
            clipped, idx = clip_boxes(boxes, x0, y0, tw, th, min_visible)
            tiles.append(
                {
                    "name": f"{stem}_r{r}_c{c}.png",
                    "source": stem,
                    "offset": [x0, y0],
                    "width": tw,
                    "height": th,
                    "pixels": image[y0 : y0 + th, x0 : x0 + tw],
                    "boxes": clipped,
                    "box_ids": idx,
                }
            )
    return tiles


def _write_split(build: str, split: str, tiles: list[dict], json_name: str) -> dict:
    from PIL import Image

    folder = os.path.join(build, "images", split)
    os.makedirs(folder, exist_ok=True)
    images: list[dict] = []
    annotations: list[dict] = []
    for image_id, t in enumerate(tiles, start=1):
        Image.fromarray(np.ascontiguousarray(t["pixels"])).save(
            os.path.join(folder, t["name"]), format="PNG", compress_level=1
        )
        images.append(
            {
                "id": image_id,
                "file_name": f"{split}/{t['name']}",
                "width": int(t["width"]),
                "height": int(t["height"]),
                "source": t["source"],
                "offset": [int(v) for v in t["offset"]],
            }
        )
        for x1, y1, x2, y2 in t["boxes"].tolist():
            w, h = x2 - x1, y2 - y1
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "bbox": [float(x1), float(y1), float(w), float(h)],
                    "area": float(w * h),
                    "iscrowd": 0,
                }
            )
    coco = {"images": images, "annotations": annotations, "categories": CATEGORIES}
    with open(os.path.join(build, json_name), "w") as f:
        json.dump(coco, f, indent=1, sort_keys=True)
        f.write("\n")
    return {"tiles": len(images), "boxes": len(annotations)}


def _unassigned(tiles: list[dict], n_boxes: int) -> int:
    seen = np.zeros(n_boxes, dtype=bool)
    for t in tiles:
        seen[t["box_ids"]] = True
    return int((~seen).sum())


def read_ready(root: str) -> dict | None:
    """The ``READY.json`` of a prepared folder, or None when there is none (or it is unreadable)."""
    try:
        with open(os.path.join(root, "READY.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _check_params(tile, num_labeled, seed, max_unlabeled, max_val, min_visible) -> None:
    for name, value, low in (("tile", tile, 1), ("num_labeled", num_labeled, 0), ("seed", seed, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    for name, value in (("max_unlabeled", max_unlabeled), ("max_val", max_val)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise ValueError(f"{name} must be None or an integer >= 0, got {value!r}")
    if not 0.0 < float(min_visible) <= 1.0:
        raise ValueError(f"min_visible must be in (0, 1], got {min_visible}")


def prepare(
    out_dir: str,
    *,
    tile: int = 256,
    num_labeled: int = 12,
    seed: int = 0,
    max_unlabeled: int | None = None,
    max_val: int | None = None,
    min_visible: float = 0.5,
) -> DeepForestSplit:
    """Build (or find already built) the tiled DeepForest datasets in ``out_dir``; see the module docstring."""
    _check_params(tile, num_labeled, seed, max_unlabeled, max_val, min_visible)
    out_dir = os.path.abspath(os.fspath(out_dir))
    split = DeepForestSplit.at(out_dir)
    data_dir = deepforest_data_dir()
    sources = {}
    for stem in (TRAIN_SCENE, VAL_SCENE):
        for path in _source_files(data_dir, stem):
            sources[os.path.basename(path)] = _sha256(path)
    params = {
        "format_version": FORMAT_VERSION,
        "tile": tile,
        "num_labeled": num_labeled,
        "seed": seed,
        "max_unlabeled": max_unlabeled,
        "max_val": max_val,
        "min_visible": float(min_visible),
        "sources": sources,
    }
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()

    build = start_build(out_dir, digest, read_ready)
    if build is None:
        return split
    try:
        counts = _build(build, data_dir, tile, num_labeled, seed, max_unlabeled, max_val, float(min_visible))
        with open(os.path.join(build, "READY.json"), "w") as f:
            json.dump({"digest": digest, "params": params, "counts": counts}, f, indent=1, sort_keys=True)
            f.write("\n")
        swap_into_place(build, out_dir, digest, read_ready)
    finally:
        if os.path.exists(build):
            shutil.rmtree(build, ignore_errors=True)
    return split


def _build(build, data_dir, tile, num_labeled, seed, max_unlabeled, max_val, min_visible) -> dict:
    image, boxes = load_scene(data_dir, TRAIN_SCENE)
    height, width = image.shape[:2]
    train_tiles = _tiles(image, boxes, TRAIN_SCENE, _grid_spans(height, tile), _grid_spans(width, tile), min_visible)
    candidates = [i for i, t in enumerate(train_tiles) if len(t["boxes"])]
    if num_labeled > len(candidates):
        raise ValueError(
            f"num_labeled={num_labeled} but only {len(candidates)} of {len(train_tiles)} tiles of "
            f"{TRAIN_SCENE} have boxes at tile={tile}"
        )
    rng = np.random.default_rng(seed)
    picked = sorted(candidates[i] for i in rng.choice(len(candidates), size=num_labeled, replace=False))
    labeled = [train_tiles[i] for i in picked]
    chosen = set(picked)
    unlabeled = [t for i, t in enumerate(train_tiles) if i not in chosen]
    if max_unlabeled is not None:
        unlabeled = unlabeled[:max_unlabeled]

    val_image, val_boxes = load_scene(data_dir, VAL_SCENE)
    val_height, val_width = val_image.shape[:2]
    all_val_tiles = _tiles(
        val_image,
        val_boxes,
        VAL_SCENE,
        partition_spans(val_height, tile),
        partition_spans(val_width, tile),
        min_visible,
    )
    all_val_tiles, multi_tile = assign_once(all_val_tiles, len(val_boxes))
    val_tiles = all_val_tiles if max_val is None else all_val_tiles[:max_val]

    counts = {
        "labeled": _write_split(build, "labeled", labeled, "labeled.json"),
        "unlabeled": _write_split(build, "unlabeled", unlabeled, "unlabeled_gt.json"),
        "val": _write_split(build, "val", val_tiles, "val.json"),
        "scenes": {
            TRAIN_SCENE: {
                "width": int(image.shape[1]),
                "height": int(image.shape[0]),
                "boxes": len(boxes),
                "tiles": len(train_tiles),
                "tiles_with_boxes": len(candidates),
                "unassigned_boxes": _unassigned(train_tiles, len(boxes)),
            },
            VAL_SCENE: {
                "width": int(val_image.shape[1]),
                "height": int(val_image.shape[0]),
                "boxes": len(val_boxes),
                "tiles": len(all_val_tiles),
                "val_boxes": sum(len(t["boxes"]) for t in all_val_tiles),
                "multi_tile_boxes": multi_tile,
                "unassigned_boxes": _unassigned(all_val_tiles, len(val_boxes)),
            },
        },
    }
    return counts


# ----------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m selftrain.datasets.deepforest",
        description="Prepare the DeepForest tree-crown benchmark as tiled COCO datasets.",
    )
    parser.add_argument("--out", default="data/deepforest", help="output folder (default: %(default)s)")
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--num-labeled", "--num-labelled", dest="num_labeled", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-unlabeled", type=int, default=None)
    parser.add_argument("--max-val", type=int, default=None)
    parser.add_argument("--min-visible", type=float, default=0.5)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    split = prepare(
        args.out,
        tile=args.tile,
        num_labeled=args.num_labeled,
        seed=args.seed,
        max_unlabeled=args.max_unlabeled,
        max_val=args.max_val,
        min_visible=args.min_visible,
    )
    seconds = time.perf_counter() - t0
    counts = (read_ready(split.root) or {}).get("counts", {})
    print(f"{split.root}: ready in {seconds:.2f} s")
    for name in ("labeled", "unlabeled", "val"):
        c = counts.get(name, {})
        print(f"  {name:<10} {c.get('tiles', '?'):>4} tiles {c.get('boxes', '?'):>5} boxes")
    for stem, s in counts.get("scenes", {}).items():
        print(
            f"  {stem}: {s['width']}x{s['height']}, {s['boxes']} boxes, {s['tiles']} tiles, "
            f"{s['unassigned_boxes']} boxes in no tile"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
