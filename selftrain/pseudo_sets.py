"""A kind's pseudo labels: the rows of one image, and a run's labels read back.

``image_rows`` / ``mask_stats`` make one image's box rows or mask statistics (the TaskKind's
``label_image`` calls them for tasks/pseudo_label_shard.py). ``PseudoBoxSet`` /
``PseudoMaskSet`` read the labels of some shards back with what a report shows of them
(summary, overlay samples, the ground-truth diagnostic); ``kind.open_pseudo`` picks one, so
tasks/write_report.py never asks which kind it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from selftrain.pseudo_labels import threshold_boxes
from storage.schemas import IMAGE_OK, IMAGE_SKIPPED, ImageStatus
from storage.store import ArtifactRef, ArtifactStore


def _skipped(base: dict, load_error: str, **empty: None) -> dict:
    return dict(base, width=None, height=None, status=IMAGE_SKIPPED, error=load_error, **empty)


def image_rows(
    image: dict, pred, load_error: str, category_ids: list[int], default_thr: float, class_thr: Mapping[int, float]
) -> tuple[list[dict], dict]:
    """Box rows and the statistics row of one image from its merged prediction.

    ``pred``: an mmdet DetDataSample (boxes x1y1x2y2 in original-image pixels, scores in
    [0, 1], labels as class indices); boxes below their class's threshold (``class_thr``:
    class index -> threshold, else ``default_thr``) are dropped, the rest clipped to the image
    (boxes clipped to nothing are dropped) and labeled with the labeled set's category id."""
    base = {"image_id": image["image_id"], "image_uri": image["image_uri"]}
    if load_error:
        return [], _skipped(base, load_error, num_boxes=None, mean_score=None)
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
    return rows, dict(
        base, width=int(w), height=int(h), status=IMAGE_OK, error=None, num_boxes=len(rows), mean_score=mean
    )


def mask_stats(image: dict, label: np.ndarray | None, confidence: np.ndarray | None, load_error: str) -> dict:
    """Statistics row of one pseudo mask: mean max-probability and the ignored fraction.

    ``label``: (H, W) uint8 class indices, 255 ignored; ``confidence``: (H, W) max
    probability in [0, 1]."""
    from storage.masks import IGNORE_LABEL

    base = {"image_id": image["image_id"], "image_uri": image["image_uri"]}
    if load_error or label is None or confidence is None:
        return _skipped(base, load_error, mean_max_prob=None, ignored_fraction=None)
    h, w = label.shape
    return dict(
        base,
        width=int(w),
        height=int(h),
        status=IMAGE_OK,
        error=None,
        mean_max_prob=float(np.mean(confidence)),
        ignored_fraction=float(np.mean(label == IGNORE_LABEL)),
    )


class PseudoSet:
    """The pseudo labels of some shards, read back (statistics in memory; labels as each
    kind reads them). Subclasses implement the kind's parts."""

    def __init__(self, store: ArtifactStore, shards: list[ArtifactRef]) -> None:
        self.store, self.shards = store, shards
        self.stats: list[dict] = []

    @property
    def ok(self) -> list[dict]:
        """Statistics rows of the images that were labeled (not skipped)."""
        return [s for s in self.stats if s["status"] == ImageStatus.OK]

    def summary(self) -> dict:
        """Counts of the kind's labels (merged into the report's pseudo-label section)."""
        raise NotImplementedError

    @staticmethod
    def describe(summary: dict, threshold: Any) -> str:
        """One sentence on the labels for the report, from ``summary`` (this class's summary
        merged into selftrain.report.pseudo_summary)."""
        raise NotImplementedError

    def samples(self, n: int) -> list[dict]:
        """The statistics rows of ``n`` images to draw."""
        raise NotImplementedError

    def overlay(self, stat: dict) -> bytes:
        """A PNG of the image with its pseudo labels."""
        raise NotImplementedError

    def quality(self, groups: dict[str, list[str]], gt: str, parameters: dict, num_classes: int) -> dict:
        """Per group of image ids, the pseudo labels' quality against ground truth ``gt`` (a
        diagnostic: selftrain/diagnostics.py)."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class PseudoBoxSet(PseudoSet):
    """Pseudo boxes of some shards: every row in memory (boxes are small)."""

    def __init__(self, store: ArtifactStore, shards: list[ArtifactRef]) -> None:
        from selftrain.stage import read_pseudo_boxes

        super().__init__(store, shards)
        self.boxes, self.stats = read_pseudo_boxes(store, shards)
        self.by_image: dict[str, list[dict]] = {}
        for b in self.boxes:
            self.by_image.setdefault(b["image_id"], []).append(b)

    def summary(self) -> dict:
        ok, boxes = self.ok, self.boxes
        return dict(
            boxes=len(boxes),
            images_with_boxes=sum(1 for s in ok if s["num_boxes"]),
            boxes_per_image=len(boxes) / len(ok) if ok else 0.0,
            mean_score=sum(b["score"] for b in boxes) / len(boxes) if boxes else None,
        )

    @staticmethod
    def describe(summary: dict, threshold: Any) -> str:
        from selftrain.report import fmt

        p = summary
        return (
            f"{p['images']} unlabeled images, {p['skipped']} skipped, {p['boxes']} boxes kept "
            f"({p['boxes_per_image']:.2f} per image, mean score {fmt(p['mean_score'])}), threshold {threshold}."
        )

    def samples(self, n: int) -> list[dict]:
        return sorted(self.ok, key=lambda s: (-(s["num_boxes"] or 0), s["image_id"]))[:n]  # the most boxes

    def overlay(self, stat: dict) -> bytes:
        from selftrain.report import overlay_png

        return overlay_png(stat["image_uri"], self.by_image.get(stat["image_id"], []))

    def quality(self, groups: dict[str, list[str]], gt: str, parameters: dict, num_classes: int) -> dict:
        from selftrain import diagnostics

        pseudo: dict[str, tuple[list, list]] = {}
        for b in self.boxes:
            entry = pseudo.setdefault(b["image_id"], ([], []))
            entry[0].append([b["x1"], b["y1"], b["x2"], b["y2"]])
            entry[1].append(b["label"])
        truth = diagnostics.load_gt_boxes(gt, {i for ids in groups.values() for i in ids})
        return {g: diagnostics.det_quality(pseudo, truth, ids) for g, ids in groups.items()}


class PseudoMaskSet(PseudoSet):
    """Pseudo masks of some shards: statistics in memory, masks read one at a time by their
    index (selftrain.stage.PseudoMaskReader)."""

    def __init__(self, store: ArtifactStore, shards: list[ArtifactRef]) -> None:
        from selftrain.stage import PseudoMaskReader, read_pseudo_masks

        super().__init__(store, shards)
        _, self.stats = read_pseudo_masks(store, shards)
        self.masks = PseudoMaskReader(store, shards)

    def summary(self) -> dict:
        ok = self.ok
        return dict(
            mean_max_prob=float(np.mean([s["mean_max_prob"] for s in ok])) if ok else None,
            ignored_fraction=float(np.mean([s["ignored_fraction"] for s in ok])) if ok else None,
        )

    @staticmethod
    def describe(summary: dict, threshold: Any) -> str:
        from selftrain.report import fmt

        p = summary
        return (
            f"{p['images']} unlabeled images, {p['skipped']} skipped; mean max-probability "
            f"{fmt(p['mean_max_prob'])}, ignored pixels {fmt(p['ignored_fraction'])} (confidence "
            f"threshold {threshold})."
        )

    def samples(self, n: int) -> list[dict]:
        # spread over the confidence range: the best, the worst and between
        ranked = sorted(self.ok, key=lambda s: (s["ignored_fraction"], s["image_id"]))
        picks = sorted({round(i * (len(ranked) - 1) / max(1, n - 1)) for i in range(n)})
        return [ranked[i] for i in picks] if ranked else []

    def overlay(self, stat: dict) -> bytes:
        from selftrain.report import mask_overlay_png

        return mask_overlay_png(stat["image_uri"], self.masks[stat["image_id"]])

    def quality(self, groups: dict[str, list[str]], gt: str, parameters: dict, num_classes: int) -> dict:
        from selftrain import diagnostics

        labeled = parameters.get("labeled") or {}
        suffix, label_map = labeled.get("seg_map_suffix", ".png"), labeled.get("label_map") or {}
        quality = {}
        for g, ids in groups.items():
            # one (pseudo, ground truth) pair in memory at a time
            pairs = (
                (pseudo_mask, m)
                for i in self.masks.in_shard_order(ids)
                if (m := diagnostics.load_gt_mask(gt, i, suffix, label_map)) is not None
                and m.shape == (pseudo_mask := self.masks[i]).shape
            )
            quality[g] = diagnostics.seg_quality(pairs, num_classes)
        return quality

    def close(self) -> None:
        self.masks.close()
