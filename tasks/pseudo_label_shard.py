"""Pseudo-label one shard: batched multi-scale x flip TTA inference, threshold, Parquet.

DESIGN 2.2: the views of each image are merged as mmdet's DetTTAModel does (boxes mapped
back to the original image, NMS over the union); boxes with score >= the threshold (one
for all classes, or per class) become pseudo boxes, one Parquet row each; every image gets
a statistics row. An unreadable image is recorded as skipped with its reason and never
stops the shard.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from prefect import task
from prefect.cache_policies import NO_CACHE

from selftrain.mm.configs import config_digest, det_tta_model, det_tta_pipeline, load_config
from selftrain.stage import get_store, scratch_dir
from storage.schemas import DET_IMAGE_STATS, IMAGE_OK, IMAGE_SKIPPED, PSEUDO_BOXES, read_parquet, \
    table_from_rows, to_parquet_bytes
from storage.store import ArtifactRef
from tasks.list_unlabeled import UNLABELED_IMAGES
from tasks.train_model import fetch_checkpoint

STAGE, VERSION = "pseudo_boxes", 1


def threshold_boxes(bboxes, scores, labels, default_thr: float, class_thr: Mapping[int, float]):
    """Indices of the boxes to keep: score >= the threshold of their class (hard threshold)."""
    keep = []
    for i, (s, c) in enumerate(zip(scores, labels)):
        if s >= class_thr.get(int(c), default_thr):
            keep.append(i)
    return keep


def image_rows(image: dict, pred, load_error: str, category_ids: list[int], default_thr: float,
               class_thr: Mapping[int, float]) -> tuple[list[dict], dict]:
    """Box rows and the statistics row of one image from its merged prediction."""
    base = {"image_id": image["image_id"], "image_uri": image["image_uri"]}
    if load_error:
        return [], dict(base, width=None, height=None, status=IMAGE_SKIPPED, error=load_error,
                        num_boxes=None, mean_score=None)
    h, w = pred.ori_shape
    inst = pred.pred_instances
    bboxes, scores, labels = inst.bboxes.tolist(), inst.scores.tolist(), inst.labels.tolist()
    rows = []
    for i in threshold_boxes(bboxes, scores, labels, default_thr, class_thr):
        x1, y1, x2, y2 = bboxes[i]
        x1, y1, x2, y2 = max(0.0, x1), max(0.0, y1), min(float(w), x2), min(float(h), y2)
        if x2 <= x1 or y2 <= y1:
            continue
        rows.append(dict(base, label=category_ids[labels[i]], x1=x1, y1=y1, x2=x2, y2=y2, score=scores[i]))
    mean = sum(r["score"] for r in rows) / len(rows) if rows else None
    return rows, dict(base, width=int(w), height=int(h), status=IMAGE_OK, error=None, num_boxes=len(rows),
                      mean_score=mean)


class _Images:
    """The shard's images through the TTA pipeline (a map-style dataset for DataLoader)."""

    def __init__(self, images: list[dict], pipeline):
        self.images, self.pipeline = images, pipeline

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return self.pipeline({"img_path": self.images[i]["image_uri"], "img_id": i})


@task(name="pseudo_label_shard", cache_policy=NO_CACHE)
def pseudo_label_shard(store_url: str, model_config: str, model: ArtifactRef, shard: ArtifactRef,
                       labelled: ArtifactRef, *, scales: list[float], flip: bool, score_thr: float,
                       class_thresholds: dict[str, float] | None = None, batch_size: int = 8,
                       num_workers: int | None = None) -> ArtifactRef:
    import torch
    from mmengine.config import ConfigDict
    from mmengine.dataset import Compose, pseudo_collate
    from mmengine.device import get_device
    from mmengine.registry import init_default_scope
    from mmengine.runner import load_checkpoint

    import selftrain.mm  # noqa: F401 - registers the project's transforms and models
    from mmdet.registry import MODELS
    from selftrain.mm.loss_normalization import REVISE_KEYS

    store = get_store(store_url)
    cfg = load_config(model_config)
    labelled_meta = store.manifest(labelled).meta
    classes, category_ids = labelled_meta["classes"], labelled_meta["category_ids"]
    unknown = set(class_thresholds or {}) - set(classes)
    if unknown:
        raise ValueError(f"class_thresholds names unknown classes {sorted(unknown)}; classes are {classes}")
    class_thr = {classes.index(name): float(t) for name, t in (class_thresholds or {}).items()}
    params = {"scales": list(map(float, scales)), "flip": bool(flip), "score_thr": float(score_thr),
              "class_thresholds": {k: float(v) for k, v in sorted((class_thresholds or {}).items())},
              "checkpoint": "last"}
    ref = store.stage_ref(shard.dataset, STAGE, VERSION, config_digest(cfg),
                          {"model": model, "shard": shard, "labelled": labelled}, params)
    if store.has(ref):
        return ref

    images = read_parquet(store.read(shard, "images.parquet"), UNLABELED_IMAGES).to_pylist()
    init_default_scope("mmdet")
    ckpt = fetch_checkpoint(store, model, "last", os.path.join(scratch_dir(ref), "model.pth"))
    tta = MODELS.build(ConfigDict(det_tta_model(cfg)))
    load_checkpoint(tta.module, ckpt, map_location="cpu", revise_keys=REVISE_KEYS, logger="silent")
    device = get_device()
    tta.to(device).eval()
    if num_workers is None:
        # On a CPU the model already uses every core and decoding a tile costs little next to
        # it; worker processes forked from a long-running flow process also died once here
        # (exit code 1, no trace). On a GPU, decoding in workers keeps the GPU fed.
        num_workers = 2 if device == "cuda" else 0
    loader = torch.utils.data.DataLoader(
        _Images(images, Compose(det_tta_pipeline(cfg, scales, flip))), batch_size=batch_size,
        num_workers=num_workers, collate_fn=pseudo_collate, shuffle=False)

    boxes, stats = [], []
    with torch.no_grad():
        for batch in loader:
            for pred in tta.test_step(batch):
                image = images[pred.img_id]
                rows, stat = image_rows(image, pred, pred.metainfo.get("load_error", ""), category_ids,
                                        score_thr, class_thr)
                boxes += rows
                stats.append(stat)
    stats.sort(key=lambda s: s["image_id"])
    skipped = [{"image_id": s["image_id"], "reason": s["error"]} for s in stats if s["status"] != IMAGE_OK]
    meta = {"params": params, "num_images": len(images), "num_boxes": len(boxes), "skipped": skipped}
    with store.writer(ref, meta=meta) as w:
        w.write_bytes("boxes.parquet", to_parquet_bytes(table_from_rows(boxes, PSEUDO_BOXES), PSEUDO_BOXES))
        w.write_bytes("stats.parquet", to_parquet_bytes(table_from_rows(stats, DET_IMAGE_STATS), DET_IMAGE_STATS))
    return ref
