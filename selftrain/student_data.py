"""A student's training data from stored pseudo labels: which images it sees (ST++: the
reliable ones, plus the re-labeled) and which labels (the thresholds, applied here and not at
inference), written as the files OpenMMLab datasets read - one COCO file of pseudo boxes
(detection), PNG label maps and a pair list (segmentation)."""

from __future__ import annotations

import json
import os

from selftrain.mm.configs import CocoSource, SegSource
from selftrain.pseudo_labels import Thresholds, apply_confidence
from selftrain.stage import read_pseudo_boxes, read_pseudo_masks
from storage.schemas import ImageStatus
from storage.store import ArtifactRef, ArtifactStore


def reliable_ids(store: ArtifactStore, ranking: ArtifactRef) -> set[str]:
    from storage.schemas import RANKING, read_parquet

    rows = read_parquet(store.read(ranking, "ranking.parquet"), RANKING).to_pylist()
    return {r["image_id"] for r in rows if r["reliable"]}


PseudoSources = list[tuple[list[ArtifactRef], "set[str] | None"]]


def pseudo_sources(
    store: ArtifactStore,
    pseudo: list[ArtifactRef],
    reliable_only: ArtifactRef | None,
    relabeled: list[ArtifactRef] | None,
) -> PseudoSources:
    """Which pseudo labels a student sees: ``pseudo`` (only the ranking's reliable images when
    ``reliable_only`` is given) plus every image of ``relabeled`` (ST++ phase 2)."""
    keep = reliable_ids(store, reliable_only) if reliable_only is not None else None
    return [(list(pseudo), keep)] + ([(list(relabeled), None)] if relabeled else [])


def pseudo_seg(
    store: ArtifactStore, sources: PseudoSources, classes: tuple[str, ...], folder: str, thresholds: Thresholds
) -> tuple[SegSource, int, dict]:
    """Materialise pseudo-mask shards as PNG label maps + a pair list (images stay where they
    are), each pixel below its predicted class's confidence threshold set to the ignore label
    255 (masks stored with their threshold applied - version 1 shards - are taken as stored).
    Returns the set, its number of images and {'labels': kept pixels, 'per_class': kept
    pixels by class name, 'ignored': ignored pixels}."""
    import numpy as np
    from PIL import Image

    os.makedirs(os.path.join(folder, "pseudo_masks"), exist_ok=True)
    quantised = thresholds.quantised(classes)
    pixels = np.zeros(256, dtype=np.int64)
    pairs: list[dict[str, str]] = []
    for shards, keep in sources:
        masks, stats = read_pseudo_masks(store, shards, confidence=True)
        uris = {s["image_id"]: s["image_uri"] for s in stats if s["status"] == ImageStatus.OK}
        for image_id, label, confidence in masks:
            if keep is not None and image_id not in keep:
                continue
            mask = apply_confidence(label, confidence, quantised)
            pixels += np.bincount(mask.ravel(), minlength=256)
            path = os.path.join(folder, "pseudo_masks", f"{len(pairs):07d}.png")
            Image.fromarray(mask, mode="L").save(path)
            pairs.append({"image_id": image_id, "img_path": uris[image_id], "seg_map_path": path})
    if not pairs:
        raise ValueError("no pseudo masks to train a student on")
    out = os.path.join(folder, "pseudo.json")
    with open(out, "w") as f:
        json.dump(pairs, f)
    held = {
        "labels": int(pixels[: len(classes)].sum()),
        "per_class": {c: int(pixels[i]) for i, c in enumerate(classes)},
        "ignored": int(pixels[255]),
        "unit": "pixels",
    }
    return SegSource(pairs_file=out, classes=classes), len(pairs), held


def pseudo_coco(
    store: ArtifactStore, sources: PseudoSources, labeled: CocoSource, path: str, thresholds: Thresholds
) -> tuple[CocoSource, int, dict]:
    """Materialise pseudo-box shards as one COCO file (image file_name = the image's URI),
    keeping the boxes whose score is at least their class's threshold.

    Returns the set, its number of images with at least one box (those the student's
    dataset keeps: mmdet drops images without a box), which sizes oversampling and schedule,
    and {'labels': kept boxes, 'per_class': kept boxes by class name}."""
    with open(labeled.ann_file) as f:
        categories = json.load(f)["categories"]
    threshold = {c["id"]: thresholds.of(c["name"]) for c in categories}
    names = {c["id"]: c["name"] for c in categories}
    boxes: list[dict] = []
    stats: list[dict] = []
    stored = 0  # boxes the teacher stored, before the thresholds
    for shards, keep in sources:
        for shard in shards:  # one shard's rows at a time: only the kept boxes stay in memory
            shard_boxes, shard_stats = read_pseudo_boxes(store, [shard])
            stored += len(shard_boxes)
            boxes += [
                x
                for x in shard_boxes
                if (keep is None or x["image_id"] in keep)
                and x["score"] >= threshold.get(x["label"], thresholds.default)
            ]
            stats += [x for x in shard_stats if keep is None or x["image_id"] in keep]
    if len({s["image_id"] for s in stats}) != len(stats):
        raise ValueError("an image has pseudo labels from two sources; each must be labeled once")
    images: list[dict] = []
    annotations: list[dict] = []
    ids: dict[str, int] = {}
    for s in stats:
        if s["status"] != ImageStatus.OK:
            continue
        ids[s["image_id"]] = len(images) + 1
        images.append({"id": len(images) + 1, "file_name": s["image_uri"], "width": s["width"], "height": s["height"]})
    for b in boxes:
        w, h = b["x2"] - b["x1"], b["y2"] - b["y1"]
        annotations.append(
            {
                "id": len(annotations) + 1,
                "image_id": ids[b["image_id"]],
                "category_id": b["label"],
                "bbox": [b["x1"], b["y1"], w, h],
                "area": w * h,
                "iscrowd": 0,
                "score": b["score"],
            }
        )
    if not annotations:
        floor = "the model config's own test_cfg.score_thr - 0.05 in the CPU config - is the floor of what is stored"
        if not stored:
            advice = (
                f"the teacher stored no box at all ({floor}): train it longer, or lower that value in a "
                "copy of the config"
            )
        else:
            advice = f"train the teacher longer or lower score_threshold ({floor})"
        raise ValueError(
            f"no pseudo boxes to train a student on: no box on any of {len(images)} unlabeled images "
            f"reaches its threshold ({thresholds.describe()}); {advice}"
        )
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    # the images the student trains on: mmdet drops images without a box (filter_empty_gt)
    trained = len({a["image_id"] for a in annotations})
    per_class = {c["name"]: 0 for c in categories}
    for b in boxes:
        per_class[names[b["label"]]] += 1
    held = {"labels": len(annotations), "per_class": per_class, "unit": "boxes"}
    return CocoSource(ann_file=path, image_root="", classes=labeled.classes), trained, held
