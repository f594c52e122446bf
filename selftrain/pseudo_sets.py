"""A kind's pseudo labels: the rows of one image, and a run's labels read back.

``image_rows`` / ``mask_stats`` make one image's box rows or mask statistics (the TaskKind's
``label_image`` calls them for tasks/pseudo_label_shard.py). ``PseudoBoxSet`` /
``PseudoMaskSet`` read the labels of some shards back with what a report shows of them
(summary, overlay samples, the ground-truth diagnostic); ``kind.open_pseudo`` picks one, so
tasks/write_report.py never asks which kind it is.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from selftrain.pseudo_labels import Thresholds
from storage.schemas import IMAGE_OK, IMAGE_SKIPPED, ImageStatus
from storage.store import ArtifactRef, ArtifactStore


def _skipped(base: dict, load_error: str, **empty: None) -> dict:
    return dict(base, width=None, height=None, status=IMAGE_SKIPPED, error=load_error, **empty)


def image_rows(image: dict, pred, load_error: str, category_ids: list[int]) -> tuple[list[dict], dict]:
    """Box rows and the statistics row of one image from its merged prediction.

    ``pred``: an mmdet DetDataSample (boxes x1y1x2y2 in original-image pixels, scores in
    [0, 1], labels as class indices); every box is kept with its score (the model's own
    test_cfg.score_thr is the floor; thresholds are applied when a student's set is built),
    clipped to the image (boxes clipped to nothing are dropped) and labeled with the
    labeled set's category id. The statistics count the stored boxes."""
    base = {"image_id": image["image_id"], "image_uri": image["image_uri"]}
    if load_error:
        return [], _skipped(base, load_error, num_boxes=None, mean_score=None)
    h, w = pred.ori_shape
    inst = pred.pred_instances
    bboxes, scores, labels = inst.bboxes.tolist(), inst.scores.tolist(), inst.labels.tolist()
    rows = []
    for i in range(len(bboxes)):
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
    probability in [0, 1]. (Shards of version 2 store every pixel: their ignored fraction is
    0, and a threshold ignores pixels only when a student's set is built.)"""
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


SCORE_BINS = 20  # histogram bins over [0, 1]


def _histogram(values: np.ndarray, bins: int) -> np.ndarray:
    """Counts of ``values`` in ``bins`` equal bins over [0, 1] (1.0 in the last bin)."""
    return np.histogram(np.clip(values, 0.0, 1.0), bins=bins, range=(0.0, 1.0))[0]


class PseudoSet:
    """The pseudo labels of some shards, read back (statistics in memory; labels as each
    kind reads them), with ``thresholds`` applied (selftrain.pseudo_labels.Thresholds; None:
    every stored label). ``labeled_meta``: the labeled set's manifest meta (classes).
    Subclasses implement the kind's parts."""

    formats: tuple[str, ...] = ()  # export formats (selftrain/export.py)

    def __init__(
        self, store: ArtifactStore, shards: list[ArtifactRef], labeled_meta: dict, thresholds: Thresholds | None = None
    ) -> None:
        self.store, self.shards, self.labeled_meta = store, shards, labeled_meta
        self.thresholds = thresholds if thresholds is not None else Thresholds(default=0.0)
        self.stats: list[dict] = []

    @property
    def ok(self) -> list[dict]:
        """Statistics rows of the images that were labeled (not skipped)."""
        return [s for s in self.stats if s["status"] == ImageStatus.OK]

    def image_score(self, row: dict) -> float:
        """How confident the labels of one image (a statistics row) are, for ranking images:
        the mean score of its kept boxes (0 without one), or its mean pixel confidence."""
        raise NotImplementedError

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

    def overlays(self, samples: list[dict], labeled_meta: dict, parameters: dict) -> list[bytes]:
        """PNGs of ``samples`` (statistics rows) with their pseudo labels - class names and
        scores - and, where the run names the unlabeled images' ground truth
        (``parameters['unlabeled_gt']``), that ground truth beside them."""
        raise NotImplementedError

    def quality(self, groups: dict[str, list[str]], gt: str, parameters: dict, num_classes: int) -> dict:
        """Per group of image ids, the pseudo labels' quality against ground truth ``gt`` (a
        diagnostic: selftrain/diagnostics.py)."""
        raise NotImplementedError

    def label_stats(self, labeled_meta: dict, bins: int = SCORE_BINS) -> dict:
        """The labels as one table, streamed from the stored Parquet files (never all in
        memory): ``per_class`` counts by class name, a ``histogram`` of the scores or
        confidences (``edges``: bins + 1 values over [0, 1], ``counts``) and counts of images
        by how many labels they hold."""
        raise NotImplementedError

    def class_scores(self) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
        """Every stored label's score by class name, for choosing thresholds after inference
        (selftrain.pseudo_labels.choose_thresholds): (scores, None) for boxes, (the 256
        quantised confidence values / 255, pixel counts) for masks; streamed, never all
        labels in memory at once for masks."""
        raise NotImplementedError

    def export(self, images: list[dict], fmt: str, out: str, labeled_meta: dict, **options: Any) -> dict:
        """Write the labels of ``images`` (statistics rows) as ``fmt`` to ``out``; returns
        {'images': n, 'labels': n} (selftrain/export.py)."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class PseudoBoxSet(PseudoSet):
    """Pseudo boxes of some shards: the per-image statistics in memory; the box rows read one
    shard at a time on first use, keeping only those the thresholds keep (``boxes``,
    ``by_image``: the report and exports; the others are counted, and ``below(image_ids)``
    reads them again for a few images); ``label_stats`` streams them."""

    formats = ("coco", "label-studio")

    def __init__(
        self, store: ArtifactStore, shards: list[ArtifactRef], labeled_meta: dict, thresholds: Thresholds | None = None
    ) -> None:
        from storage.schemas import DET_IMAGE_STATS, read_parquet

        super().__init__(store, shards, labeled_meta, thresholds)
        self.stats = [
            r for ref in shards for r in read_parquet(store.read(ref, "stats.parquet"), DET_IMAGE_STATS).to_pylist()
        ]
        names = dict(zip(labeled_meta["category_ids"], labeled_meta["classes"], strict=True))
        self._threshold = {c: self.thresholds.of(n) for c, n in names.items()}  # by category id

    def image_score(self, row: dict) -> float:
        kept = self.by_image.get(row["image_id"], [])
        return float(sum(b["score"] for b in kept) / len(kept)) if kept else 0.0

    def kept(self, box: dict) -> bool:
        """Whether the thresholds keep a box row (score >= its class's threshold)."""
        return bool(box["score"] >= self._threshold.get(box["label"], self.thresholds.default))

    def _shard_rows(self):
        """The stored box rows, one shard's at a time (the box files only: the statistics were
        read when the set was opened)."""
        from storage.schemas import PSEUDO_BOXES, read_parquet

        for ref in self.shards:
            yield read_parquet(self.store.read(ref, "boxes.parquet"), PSEUDO_BOXES).to_pylist()

    @functools.cached_property
    def _kept_and_below(self) -> tuple[list[dict], int]:
        # Read shard by shard: only the boxes the thresholds keep stay in memory (a teacher
        # stores every box above the model's floor, often tens of times more than it keeps).
        kept: list[dict] = []
        below = 0
        for rows in self._shard_rows():
            for b in rows:
                if self.kept(b):
                    kept.append(b)
                else:
                    below += 1
        return kept, below

    @property
    def boxes(self) -> list[dict]:
        """The stored boxes the thresholds keep."""
        return self._kept_and_below[0]

    def below(self, image_ids: set[str]) -> dict[str, list[dict]]:
        """The stored boxes below their threshold of the images ``image_ids``, by image id
        (read again shard by shard: the report draws them for a few images only)."""
        grouped: dict[str, list[dict]] = {}
        for rows in self._shard_rows():
            for b in rows:
                if b["image_id"] in image_ids and not self.kept(b):
                    grouped.setdefault(b["image_id"], []).append(b)
        return grouped

    @functools.cached_property
    def by_image(self) -> dict[str, list[dict]]:
        grouped: dict[str, list[dict]] = {}
        for b in self.boxes:
            grouped.setdefault(b["image_id"], []).append(b)
        return grouped

    def summary(self) -> dict:
        ok, boxes = self.ok, self.boxes
        return dict(
            boxes=len(boxes),
            boxes_below_threshold=self._kept_and_below[1],
            images_with_boxes=sum(1 for s in ok if s["image_id"] in self.by_image),
            boxes_per_image=len(boxes) / len(ok) if ok else 0.0,
            mean_score=sum(b["score"] for b in boxes) / len(boxes) if boxes else None,
        )

    @staticmethod
    def describe(summary: dict, threshold: Any) -> str:
        from selftrain.report import fmt

        p = summary
        below = p.get("boxes_below_threshold")
        return (
            f"{p['images']} unlabeled images, {p['skipped']} skipped, {p['boxes']} boxes kept "
            f"({p['boxes_per_image']:.2f} per image, mean score {fmt(p['mean_score'])})"
            + (f", {below} stored below it" if below is not None else "")
            + f"; threshold {threshold}."
        )

    def samples(self, n: int) -> list[dict]:
        kept = {i: len(v) for i, v in self.by_image.items()}
        return sorted(self.ok, key=lambda s: (-kept.get(s["image_id"], 0), s["image_id"]))[:n]  # the most boxes

    def overlays(self, samples: list[dict], labeled_meta: dict, parameters: dict) -> list[bytes]:
        from selftrain.report import overlay_png

        names = dict(zip(labeled_meta["category_ids"], labeled_meta["classes"], strict=True))
        truth = None
        if parameters.get("unlabeled_gt"):
            from selftrain import diagnostics

            truth = diagnostics.load_gt_boxes(parameters["unlabeled_gt"], {s["image_id"] for s in samples})
        below = self.below({s["image_id"] for s in samples})
        return [
            overlay_png(
                s["image_uri"],
                self.by_image.get(s["image_id"], []),
                names,
                None if truth is None else truth.get(s["image_id"], ([], [])),
                below=below.get(s["image_id"], []),
            )
            for s in samples
        ]

    def label_stats(self, labeled_meta: dict, bins: int = SCORE_BINS) -> dict:
        from storage.schemas import DET_IMAGE_STATS, PSEUDO_BOXES

        name = dict(zip(labeled_meta["category_ids"], labeled_meta["classes"], strict=True))
        per_class = dict.fromkeys(labeled_meta["classes"], 0)
        below_class = dict.fromkeys(labeled_meta["classes"], 0)
        counts = np.zeros(bins, dtype=np.int64)
        kept_per_image: dict[str, int] = {}
        boxes = self.store.parquet_dataset(self.shards, "boxes.parquet", PSEUDO_BOXES)
        for batch in boxes.to_batches(columns=["image_id", "label", "score"]):
            labels, scores = batch.column("label").to_numpy(), batch.column("score").to_numpy()
            thr = np.array([self._threshold.get(int(c), self.thresholds.default) for c in labels], dtype=np.float64)
            kept = scores >= thr
            for target, mask in ((per_class, kept), (below_class, ~kept)):
                values, n = np.unique(labels[mask], return_counts=True)
                for label, k in zip(values.tolist(), n.tolist(), strict=True):
                    target[name.get(label, str(label))] = target.get(name.get(label, str(label)), 0) + k
            for image_id in np.asarray(batch.column("image_id").to_pylist(), dtype=object)[kept]:
                kept_per_image[image_id] = kept_per_image.get(image_id, 0) + 1
            counts += _histogram(scores, bins)
        per_image: dict[int, int] = {}
        without: list[str] = []
        stats = self.store.parquet_dataset(self.shards, "stats.parquet", DET_IMAGE_STATS)
        for batch in stats.to_batches(columns=["image_id", "status"]):
            for image_id, status in zip(*(batch.column(c).to_pylist() for c in batch.schema.names), strict=True):
                if status != IMAGE_OK:
                    continue
                num = kept_per_image.get(image_id, 0)
                per_image[num] = per_image.get(num, 0) + 1
                if num == 0 and len(without) < 20:
                    without.append(image_id)
        return {
            "per_class": per_class,
            "below_threshold": below_class,
            "thresholds": {c: self.thresholds.of(c) for c in labeled_meta["classes"]},
            "histogram": {
                "of": "box score (every stored box)",
                "edges": np.linspace(0, 1, bins + 1).tolist(),
                "counts": counts.tolist(),
            },
            "images_by_count": {str(k): per_image[k] for k in sorted(per_image)},
            "images_without_labels": per_image.get(0, 0),
            "images_without_labels_sample": without,
        }

    def class_scores(self) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
        from storage.schemas import PSEUDO_BOXES

        meta = self.labeled_meta
        name = dict(zip(meta["category_ids"], meta["classes"], strict=True))
        parts: dict[str, list[np.ndarray]] = {c: [] for c in meta["classes"]}
        boxes = self.store.parquet_dataset(self.shards, "boxes.parquet", PSEUDO_BOXES)
        for batch in boxes.to_batches(columns=["label", "score"]):
            labels, scores = batch.column("label").to_numpy(), batch.column("score").to_numpy()
            for label in np.unique(labels).tolist():
                parts.setdefault(name.get(label, str(label)), []).append(scores[labels == label].astype(np.float64))
        return {c: (np.concatenate(v) if v else np.zeros(0), None) for c, v in parts.items()}

    def export(self, images: list[dict], fmt: str, out: str, labeled_meta: dict, **options: Any) -> dict:
        from selftrain.export import ExportError, write_coco_or_tasks

        classes = list(labeled_meta["classes"])
        wanted = set(self.by_image) & {r["image_id"] for r in images}
        boxes = [b for i in sorted(wanted) for b in self.by_image[i]]
        class_name = options.get("class_name")
        if class_name is not None:
            if class_name not in classes:
                raise ExportError(f"class {class_name!r} is not one of the labeled set's classes {classes}")
            category = dict(zip(classes, labeled_meta["category_ids"], strict=True))[class_name]
            boxes = [b for b in boxes if b["label"] == category]
            images = [r for r in images if r["image_id"] in {b["image_id"] for b in boxes}]
        if not images:
            raise ExportError("the selection holds no image")
        write_coco_or_tasks(
            boxes,
            images,
            labeled_meta,
            fmt,
            out,
            options.get("image_url_prefix"),
            options.get("model_version") or "selftrain",
        )
        return {"images": len(images), "labels": len(boxes)}

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
    index (selftrain.stage.PseudoMaskReader), the thresholds applied to each (pixels below
    their class's confidence threshold: the ignore label 255)."""

    formats = ("png",)

    def __init__(
        self, store: ArtifactStore, shards: list[ArtifactRef], labeled_meta: dict, thresholds: Thresholds | None = None
    ) -> None:
        from selftrain.stage import PseudoMaskReader, read_pseudo_masks

        super().__init__(store, shards, labeled_meta, thresholds)
        _, self.stats = read_pseudo_masks(store, shards)
        self.quantised = self.thresholds.quantised(labeled_meta["classes"])
        self.masks = PseudoMaskReader(store, shards, self.quantised)

    @functools.cached_property
    def pixels(self) -> tuple[np.ndarray, np.ndarray, list[str], int]:
        """Pixels per label value (256,) after the thresholds, pixels per predicted class below
        them (256,), the ids of the images whose every pixel is ignored, and the number of
        masks stored without confidence (an earlier version applied its threshold when
        labeling: thresholds do not change them); counted one mask at a time."""
        from selftrain.pseudo_labels import apply_confidence
        from selftrain.stage import read_pseudo_masks

        kept, below = np.zeros(256, dtype=np.int64), np.zeros(256, dtype=np.int64)
        empty: list[str] = []
        fixed = 0
        masks, _ = read_pseudo_masks(self.store, self.shards, confidence=True)
        for image_id, label, confidence in masks:
            fixed += confidence is None
            out = apply_confidence(label, confidence, self.quantised)
            counts = np.bincount(out.ravel(), minlength=256)
            kept += counts
            below += np.bincount(label[(out == 255) & (label != 255)], minlength=256)
            if counts[255] == out.size:
                empty.append(image_id)
        return kept, below, empty, fixed

    def image_score(self, row: dict) -> float:
        return float(row["mean_max_prob"] or 0.0)

    def class_scores(self) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
        from selftrain.stage import read_pseudo_masks

        classes = self.labeled_meta["classes"]
        hist = np.zeros((256, 256), dtype=np.int64)  # [label value, quantised confidence]
        masks, _ = read_pseudo_masks(self.store, self.shards, confidence=True)
        for _, label, confidence in masks:
            if confidence is not None:  # a mask stored with its threshold applied has no scores
                hist += np.bincount(
                    label.ravel().astype(np.int64) * 256 + confidence.ravel(), minlength=256 * 256
                ).reshape(256, 256)
        values = np.arange(256, dtype=np.float64) / 255.0
        return {c: (values, hist[i]) for i, c in enumerate(classes)}

    def summary(self) -> dict:
        ok = self.ok
        kept = self.pixels[0]
        return dict(
            mean_max_prob=float(np.mean([s["mean_max_prob"] for s in ok])) if ok else None,
            ignored_fraction=float(kept[255] / kept.sum()) if kept.sum() else None,
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
        ranked = sorted(self.ok, key=lambda s: (-(s["mean_max_prob"] or 0.0), s["image_id"]))
        picks = sorted({round(i * (len(ranked) - 1) / max(1, n - 1)) for i in range(n)})
        return [ranked[i] for i in picks] if ranked else []

    def overlays(self, samples: list[dict], labeled_meta: dict, parameters: dict) -> list[bytes]:
        from selftrain import diagnostics
        from selftrain.report import mask_overlay_png

        gt = parameters.get("unlabeled_gt")
        labeled = parameters.get("labeled") or {}
        suffix, label_map = labeled.get("seg_map_suffix", ".png"), labeled.get("label_map") or {}
        return [
            mask_overlay_png(
                s["image_uri"],
                self.masks[s["image_id"]],
                diagnostics.load_gt_mask(gt, s["image_id"], suffix, label_map) if gt else None,
            )
            for s in samples
        ]

    def label_stats(self, labeled_meta: dict, bins: int = SCORE_BINS) -> dict:
        """For masks: pixels per class after the thresholds (255 ignored, counted apart) and
        per predicted class below them, read one mask at a time, and the histogram of each
        image's mean confidence (mean max-probability)."""
        from storage.masks import IGNORE_LABEL

        classes = labeled_meta["classes"]
        pixels, below, empty, fixed = self.pixels  # empty: every pixel below the confidence threshold
        counts = _histogram(np.array([s["mean_max_prob"] for s in self.ok], dtype=np.float64), bins)
        num_without, without = len(empty), empty[:20]
        per_class = {c: int(pixels[i]) for i, c in enumerate(classes)}
        per_class["ignored (255)"] = int(pixels[IGNORE_LABEL])
        return {
            "per_class": per_class,
            "below_threshold": {c: int(below[i]) for i, c in enumerate(classes)},
            "thresholds": {c: self.thresholds.of(c) for c in classes},
            "stored_thresholded": fixed,  # masks no threshold changes (stored by an earlier version)
            "unit": "pixels",
            "histogram": {
                "of": "mean confidence per image",
                "edges": np.linspace(0, 1, bins + 1).tolist(),
                "counts": counts.tolist(),
            },
            "images_by_count": {},
            "images_without_labels": num_without,
            "images_without_labels_sample": without,
        }

    def quality(self, groups: dict[str, list[str]], gt: str, parameters: dict, num_classes: int) -> dict:
        from selftrain import diagnostics

        labeled = parameters.get("labeled") or {}
        suffix, label_map = labeled.get("seg_map_suffix", ".png"), labeled.get("label_map") or {}
        quality = {}
        for g, ids in groups.items():
            # one (pseudo, ground truth) pair in memory at a time
            pairs = (  # seg_quality counts, and leaves out, pairs of different sizes
                (self.masks[i], m)
                for i in self.masks.in_shard_order(ids)
                if (m := diagnostics.load_gt_mask(gt, i, suffix, label_map)) is not None
            )
            quality[g] = diagnostics.seg_quality(pairs, num_classes)
        return quality

    def export(self, images: list[dict], fmt: str, out: str, labeled_meta: dict, **options: Any) -> dict:
        from selftrain.export import ExportError, write_label_maps

        if options.get("class_name") is not None:
            raise ExportError("selecting images by class applies to boxes; masks hold every class")
        if not images:
            raise ExportError("the selection holds no image")
        before = self.masks.stored_thresholded
        write_label_maps(self.masks, [r["image_id"] for r in images], out)
        return {
            "images": len(images),
            "labels": len(images),
            "stored_thresholded": self.masks.stored_thresholded - before,
        }

    def close(self) -> None:
        self.masks.close()
