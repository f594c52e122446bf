"""Export a run's pseudo labels, or a selection of them, in the formats labeling tools read.

Selections (applied in this order, each optional): the images the ST++ ranking calls
``reliable`` / ``unreliable``; the ``lowest`` N images by mean box score (detection) or mean
confidence (segmentation) - the doubtful ones; for detection, images holding a box of one
class (``class_name``; only that class's boxes are exported). Images that were skipped
(unreadable) are never exported.

Formats:
- ``coco`` (detection): a COCO JSON file - images (``file_name``: the image's id under the
  unlabeled prefix, its width and height, and ``image_uri``), the labeled set's categories
  with their own ids, one annotation per pseudo box with ``bbox`` [x, y, w, h] in pixels and
  its ``score`` in [0, 1]. pycocotools loads it (``COCO(path)``, ``loadRes``).
- ``png`` (segmentation): one label map per image (``<image id>`` with ``.png``, label_map_name;
  class indices, 255 = ignored), the files a segmentation set is registered from.
- ``label-studio`` (detection): Label Studio import tasks - ``data.image`` the image's URL
  (``image_url_prefix`` + image id, or its own URI), one prediction per image with its mean
  score and a ``rectanglelabels`` result per box (x, y, width, height in percent of the
  image, ``from_name`` "label", ``to_name`` "image", the box's score), as Label Studio's
  pre-annotation import expects (labeling config: an ``Image`` named "image" and a
  ``RectangleLabels`` named "label" with the class names).

Raises ExportError naming the problem: a format the task lacks, an unknown class, a ranking
selection for a run without one, an empty selection.
"""

from __future__ import annotations

import io
import json
import os
from typing import Any

import numpy as np

from storage.schemas import RANKING, read_parquet
from storage.store import ArtifactRef, ArtifactStore


class ExportError(ValueError):
    """An export that cannot be made as asked (the message names what and why)."""


def select_images(
    pseudo: Any,
    store: ArtifactStore,
    ranking: ArtifactRef | None = None,
    group: str | None = None,
    lowest: int | None = None,
) -> list[dict]:
    """The statistics rows of the labeled (not skipped) images a selection keeps, sorted by id.

    ``pseudo``: the run's labels (a selftrain.pseudo_sets.PseudoSet); ``group``: 'reliable' |
    'unreliable' (needs the ST++ ``ranking``); ``lowest``: keep the N images with the lowest
    mean score / confidence of the labels the thresholds keep (images without a kept box count
    as 0: ``pseudo.image_score``)."""
    rows = list(pseudo.ok)
    if group is not None:
        if group not in ("reliable", "unreliable"):
            raise ExportError(f"group must be 'reliable' or 'unreliable', not {group!r}")
        if ranking is None:
            raise ExportError(
                f"selecting the {group} images needs an ST++ ranking; this run has none (only st++ runs rank)"
            )
        ranked = read_parquet(store.read(ranking, "ranking.parquet"), RANKING).to_pylist()
        keep = {r["image_id"] for r in ranked if r["reliable"] == (group == "reliable")}
        rows = [r for r in rows if r["image_id"] in keep]
    if lowest is not None:
        if lowest < 1:
            raise ExportError(f"lowest must be at least 1, got {lowest}")
        rows = sorted(rows, key=lambda r: (pseudo.image_score(r), r["image_id"]))[:lowest]
    return sorted(rows, key=lambda r: r["image_id"])


def coco_export(boxes: list[dict], images: list[dict], classes: list[str], category_ids: list[int]) -> dict:
    """A COCO dict of ``boxes`` (pseudo-box rows) on ``images`` (statistics rows)."""
    image_ids = {r["image_id"]: i for i, r in enumerate(images, start=1)}
    return {
        "images": [
            {
                "id": i,
                "file_name": r["image_id"],
                "width": r["width"],
                "height": r["height"],
                "image_uri": r["image_uri"],
            }
            for r, i in ((r, image_ids[r["image_id"]]) for r in images)
        ],
        "categories": [{"id": c, "name": n} for c, n in zip(category_ids, classes, strict=True)],
        "annotations": [
            {
                "id": j,
                "image_id": image_ids[b["image_id"]],
                "category_id": b["label"],
                "bbox": [b["x1"], b["y1"], b["x2"] - b["x1"], b["y2"] - b["y1"]],
                "area": (b["x2"] - b["x1"]) * (b["y2"] - b["y1"]),
                "iscrowd": 0,
                "score": b["score"],
            }
            for j, b in enumerate(sorted(boxes, key=lambda b: (b["image_id"], -b["score"])), start=1)
        ],
    }


def image_url(prefix: str, image_id: str) -> str:
    """``prefix`` + the image id, URL-quoted ('/' kept); a '/' between them unless the prefix
    ends with '/' or '=' (Label Studio's local files: ``/data/local-files/?d=``)."""
    from urllib.parse import quote

    joiner = "" if prefix.endswith(("/", "=")) else "/"
    return prefix + joiner + quote(image_id, safe="/")


def label_studio_tasks(
    boxes: list[dict], images: list[dict], names: dict[int, str], image_url_prefix: str | None, model_version: str
) -> list[dict]:
    """Label Studio tasks with pre-annotations (one prediction per image) for ``boxes``."""
    by_image: dict[str, list[dict]] = {}
    for b in boxes:
        by_image.setdefault(b["image_id"], []).append(b)
    tasks = []
    for r in images:
        w, h = float(r["width"]), float(r["height"])
        own = sorted(by_image.get(r["image_id"], []), key=lambda b: -b["score"])
        result = [
            {
                "id": f"b{k}",
                "from_name": "label",
                "to_name": "image",
                "type": "rectanglelabels",
                "original_width": int(w),
                "original_height": int(h),
                "image_rotation": 0,
                "value": {
                    "x": 100.0 * b["x1"] / w,
                    "y": 100.0 * b["y1"] / h,
                    "width": 100.0 * (b["x2"] - b["x1"]) / w,
                    "height": 100.0 * (b["y2"] - b["y1"]) / h,
                    "rotation": 0,
                    "rectanglelabels": [names[b["label"]]],
                },
                "score": b["score"],
            }
            for k, b in enumerate(own)
        ]
        url = image_url(image_url_prefix, r["image_id"]) if image_url_prefix else r["image_uri"]
        tasks.append(
            {
                "data": {"image": url, "image_id": r["image_id"]},
                "predictions": [
                    {
                        "model_version": model_version,
                        "score": float(np.mean([b["score"] for b in own])) if own else 0.0,
                        "result": result,
                    }
                ],
            }
        )
    return tasks


def export_labels(
    store: ArtifactStore,
    pseudo: Any,
    labeled_meta: dict,
    fmt: str,
    out: str,
    *,
    ranking: ArtifactRef | None = None,
    group: str | None = None,
    lowest: int | None = None,
    class_name: str | None = None,
    image_url_prefix: str | None = None,
    model_version: str = "selftrain",
) -> dict[str, Any]:
    """Write the selected pseudo labels of ``pseudo`` (a PseudoSet, from ``kind.open_pseudo``)
    to ``out`` (a file for coco / label-studio, a folder for png). Returns what was written:
    format, path, images, labels."""
    if fmt not in pseudo.formats:
        raise ExportError(f"these pseudo labels export as {list(pseudo.formats)}, not {fmt!r}")
    if image_url_prefix and fmt != "label-studio":
        raise ExportError(f"an image URL prefix applies to label-studio tasks, not to {fmt!r}")
    if fmt == "png":
        if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
            raise ExportError(f"--out {out}: label maps go into a new or empty folder (it exists and is not one)")
    elif os.path.isdir(out):
        raise ExportError(f"--out {out} is a folder; name the file to write")
    images = select_images(pseudo, store, ranking, group, lowest)
    written = pseudo.export(
        images,
        fmt,
        out,
        labeled_meta,
        class_name=class_name,
        image_url_prefix=image_url_prefix,
        model_version=model_version,
    )
    return {"format": fmt, "path": out, **written}


def write_coco_or_tasks(
    boxes: list[dict], images: list[dict], labeled_meta: dict, fmt: str, out: str, url_prefix: str | None, version: str
) -> None:
    """Write a COCO file or Label Studio tasks of ``boxes`` on ``images`` to ``out``."""
    classes, category_ids = list(labeled_meta["classes"]), list(labeled_meta["category_ids"])
    if fmt == "coco":
        doc: Any = coco_export(boxes, images, classes, category_ids)
    else:
        doc = label_studio_tasks(boxes, images, dict(zip(category_ids, classes, strict=True)), url_prefix, version)
    os.makedirs(os.path.dirname(os.path.abspath(out)) or ".", exist_ok=True)
    with open(out, "w") as f:
        json.dump(doc, f, indent=1)


def label_map_name(image_id: str) -> str:
    """The file, relative to the export folder, that the pseudo mask of ``image_id`` is written
    to and a reviewed map is read back from: the id without its suffix, with '.png'. An id that
    is a URL or an absolute path (a pool given as a list of images) keeps its path under the
    bucket or the root, so that every file lies inside the folder: 's3://b/x/a.jpg' ->
    'b/x/a.png', '/data/a.jpg' -> 'data/a.png'. ExportError for an id that names no file there."""
    import posixpath

    name = image_id.split("://", 1)[1] if "://" in image_id else image_id
    name = posixpath.normpath(name.replace("\\", "/")).lstrip("/")
    if name in ("", ".", "..") or name.startswith("../"):
        raise ExportError(f"image id {image_id!r} names no file inside the export folder")
    return posixpath.splitext(name)[0] + ".png"


def write_label_maps(reader: Any, image_ids: list[str], out: str) -> None:
    """One PNG label map per image under ``out`` (``<image id>`` with ``.png``), read one at a
    time from ``reader`` (a selftrain.stage.PseudoMaskReader)."""
    from PIL import Image

    names: dict[str, str] = {}
    for image_id in image_ids:
        name = label_map_name(image_id)
        if name in names:
            raise ExportError(f"images {names[name]!r} and {image_id!r} would both be written as {name!r}")
        names[name] = image_id
    for image_id in reader.in_shard_order(image_ids):
        path = os.path.join(out, *label_map_name(image_id).split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        buf = io.BytesIO()
        Image.fromarray(reader[image_id]).save(buf, format="PNG")
        with open(path, "wb") as f:
            f.write(buf.getvalue())
