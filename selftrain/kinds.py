"""The task kind - detection or semantic segmentation - decided once, from the registered set.

Everything that differs between the kinds lives on one object: its OpenMMLab scope and config
folder, the store stages of its datasets and pseudo labels, its metrics, defaults and the
students it supports, and the builders of its test-time models, pipelines and configs. The
stages ask ``kind_of(registered_set)`` (or ``KINDS[task]``) and call the object; none of them
asks "is this segmentation?". A new kind (instance segmentation, say) is one more subclass and
one more entry in KINDS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from storage.store import ArtifactRef, ArtifactStore

if TYPE_CHECKING:
    from mmengine.config import Config


@dataclass(frozen=True)
class TaskKind:
    """What one task kind is made of. Subclasses implement the builders."""

    name: str  # the flow's `task` value
    config_folder: str  # model_configs/<folder>/
    scope: str  # OpenMMLab registry scope
    dataset_stage: str  # registration's stage name
    pseudo_stage: str  # pseudo labeling's stage name
    pseudo_version: int
    main_metric: str  # the metric a report leads with (a fraction in [0, 1])
    val_metric: str  # the validation metric a training logs and keeps its best checkpoint by
    metrics: tuple[str, ...]  # every metric evaluation stores
    metrics_description: str
    default_config: str
    tta_defaults: str  # model_configs/tta/<file>: the default views and merge settings
    methods: tuple[str, ...]  # student methods this kind supports
    default_method: str
    aug_presets: tuple[str, ...]  # augmentation presets it supports
    thresholded_stability: bool  # ST++'s stability compares labels above the score threshold
    batch_by_shape: bool  # inference batches split by input shape (mmseg refuses mixed sizes)
    # the score / confidence threshold of each method's paper, for pseudo labels (docs/design.md §3.2)
    default_score_threshold: dict[str, float]
    made: str  # what pseudo labeling makes, plural ('boxes', 'masks')
    report_columns: tuple[tuple[str, str], ...]  # the report's metric columns: (key in metrics.json, header)

    def default_tta_scales(self, method: str) -> tuple[float, ...]:
        """The TTA scales (relative to the test size) of ``method``'s paper, from model_configs/tta/
        (one tuple for every method, or one per method with 'st' covering st++)."""
        from selftrain.mm.configs import tta_defaults

        scales = tta_defaults(self.tta_defaults).scales
        if isinstance(scales, dict):
            scales = scales["st" if method == "st++" else method]
        return tuple(float(s) for s in scales)

    model_noun: ClassVar[str] = "model"  # what its model configs build, for messages

    def builds(self, model_type: str) -> bool:
        """Whether a model config whose ``model.type`` is ``model_type`` builds this kind's model."""
        raise NotImplementedError

    def load_config(self, model_config: str) -> Config:
        from selftrain.mm.configs import load_config

        return load_config(model_config, self.config_folder)

    def check_transforms(self, transforms: list[dict[str, Any]]) -> None:
        """Build each transform config in this kind's registry scope, so that a misspelt type or
        a wrong argument is found before any work. Raises ConfigError naming the transform."""
        from mmengine.registry import DefaultScope

        import selftrain.mm  # noqa: F401 - registers the project's transforms
        from selftrain.mm.configs import ConfigError

        if self.scope == "mmdet":
            from mmdet.registry import TRANSFORMS
        else:
            from mmseg.registry import TRANSFORMS
        with DefaultScope.overwrite_default_scope(self.scope):
            for t in transforms:
                try:
                    TRANSFORMS.build(dict(t))
                except Exception as exc:  # noqa: BLE001 - reported with the transform it came from
                    raise ConfigError(f"transform {t} cannot be built: {type(exc).__name__}: {exc}") from exc

    def image_uris(self, store: ArtifactStore, registered: ArtifactRef) -> set[str]:
        """The URIs of a registered set's images, as the unlabeled listing writes them (so that
        images moved into the labeled set are not pseudo-labeled as well)."""
        raise NotImplementedError

    import_formats: ClassVar[tuple[str, ...]] = ()  # reviewed pseudo labels it imports (`selftrain import-labels`)

    def import_corrections(
        self,
        store: ArtifactStore,
        labeled: ArtifactRef,
        unlabeled: ArtifactRef,
        path: str,
        fmt: str,
        out: str,
        **options: Any,
    ) -> dict[str, Any]:
        """Merge reviewed pseudo labels (``path``, in ``fmt``: one of ``import_formats``) with the
        run's labeled set, written to ``out``. Returns what was merged, with 'next_labeled' (the
        next run's ``labeled`` parameters) and 'notes'; raises CorrectionError naming the item
        that does not fit (selftrain/corrections.py, selftrain/mask_corrections.py). ``options``:
        ``pseudo``, a callable opening the run's pseudo labels as exported (masks: to count the
        reviewed maps nobody changed)."""
        from selftrain.corrections import CorrectionError

        if fmt not in self.import_formats:
            raise CorrectionError(
                f"reviewed {self.made} of a {self.name} set are imported as {list(self.import_formats)}, not {fmt!r}"
            )
        return self._importer()(store, labeled, unlabeled, path, fmt, out, **options)

    def _importer(self) -> Any:
        """The function that imports this kind's reviewed labels (the signature of
        ``import_corrections``, without self)."""
        raise NotImplementedError

    # builders, implemented per kind --------------------------------------------------
    def local_set(self, store: ArtifactStore, ref: ArtifactRef, folder: str, name: str) -> Any:
        raise NotImplementedError

    def test_model(self, cfg: Config, num_classes: int) -> dict[str, Any]:
        """The plain model (single scale), for stability scoring."""
        raise NotImplementedError

    def student_data(
        self, store: ArtifactStore, sources: Any, labeled: Any, folder: str, thresholds: Any
    ) -> tuple[Any, int, dict]:
        """A student's pseudo-labeled set written as its dataset reads it (selftrain/student_data.py)
        under ``folder``, with ``thresholds`` (selftrain.pseudo_labels.Thresholds) applied: the
        set, its number of images and what it holds ({'labels': n, 'per_class': {...}})."""
        raise NotImplementedError

    def train_config(self, cfg: Config, **kwargs: Any) -> Config:
        """The training config of a teacher or student (selftrain/mm/configs/)."""
        raise NotImplementedError

    def test_pipeline(self, cfg: Config) -> list[dict[str, Any]]:
        """Single-scale inference pipeline without annotations; unreadable images marked."""
        raise NotImplementedError

    def tta_model(self, cfg: Config, num_classes: int) -> dict[str, Any]:
        """The TTA model of pseudo labeling: every label above the model's own floor is kept,
        with its score (thresholds are applied when a student's set is built)."""
        raise NotImplementedError

    def tta_pipeline(self, cfg: Config, scales: list[float], flip: bool) -> list[dict[str, Any]]:
        raise NotImplementedError

    def test_config(self, cfg: Config, work_dir: str, test: Any) -> Config:
        raise NotImplementedError

    def metrics_from(self, raw: dict[str, Any]) -> dict[str, float]:
        """The stored metrics (fractions) from the evaluator's raw output."""
        raise NotImplementedError

    # pseudo labels (selftrain/pseudo_sets.py) ------------------------------------------
    def label_image(self, image: dict, pred: Any, load_error: str, labeled_meta: dict) -> tuple[list, dict]:
        """One image's pseudo labels from its merged TTA prediction - box rows with scores, or
        one (image_id, label map, quantised confidence) - and its statistics row; no labels for
        an unreadable image."""
        raise NotImplementedError

    def shard_files(self, labels: list, stats: list[dict]) -> dict[str, bytes]:
        """The files a pseudo-label shard stores, from its images' labels and statistics rows."""
        raise NotImplementedError

    def open_pseudo(
        self, store: ArtifactStore, shards: list[ArtifactRef], labeled_meta: dict, thresholds: Any = None
    ) -> Any:
        """The pseudo labels of ``shards`` read back (a selftrain.pseudo_sets.PseudoSet), with
        ``thresholds`` (selftrain.pseudo_labels.Thresholds; None: every stored label kept)."""
        return self._pseudo_set()(store, shards, labeled_meta, thresholds)

    def describe_pseudo(self, summary: dict, threshold: Any) -> str:
        """One sentence on a run's pseudo labels (a report's pseudo-label summary)."""
        return self._pseudo_set().describe(summary, threshold)

    def _pseudo_set(self) -> Any:
        raise NotImplementedError

    def stability_view(self, pred: Any, score_thr: float, class_thr: dict) -> Any:
        """What ST++'s stability compares of one checkpoint's prediction of one image."""
        raise NotImplementedError

    def stability(self, views: list) -> float:
        """The stability score of one image from its K views, the last checkpoint's last
        (selftrain/stability.py)."""
        raise NotImplementedError


class Detection(TaskKind):
    model_noun = "detector"
    import_formats = ("coco", "label-studio")

    def _importer(self) -> Any:
        from selftrain.corrections import import_corrections

        return import_corrections

    def image_uris(self, store: ArtifactStore, registered: ArtifactRef) -> set[str]:
        from selftrain.corrections import labeled_uris

        names = [im["file_name"] for im in store.read_json(registered, "coco.json")["images"]]
        return set(labeled_uris(store.manifest(registered).meta["image_root"], names).values())

    def builds(self, model_type: str) -> bool:
        return bool(model_type) and "EncoderDecoder" not in model_type

    def local_set(self, store: ArtifactStore, ref: ArtifactRef, folder: str, name: str) -> Any:
        from selftrain.stage import local_coco

        return local_coco(store, ref, folder, name)

    def student_data(
        self, store: ArtifactStore, sources: Any, labeled: Any, folder: str, thresholds: Any
    ) -> tuple[Any, int, dict]:
        import os

        from selftrain.student_data import pseudo_coco

        return pseudo_coco(store, sources, labeled, os.path.join(folder, "pseudo.json"), thresholds)

    def train_config(self, cfg: Config, **kwargs: Any) -> Config:
        from selftrain.mm.configs import det_train_config

        return det_train_config(cfg, **kwargs)

    def test_model(self, cfg: Config, num_classes: int) -> dict[str, Any]:
        from selftrain.mm.configs import det_model

        return det_model(cfg, num_classes=num_classes)

    def test_pipeline(self, cfg: Config) -> list[dict[str, Any]]:
        from selftrain.mm.configs import det_test_pipeline

        return det_test_pipeline(cfg, with_ann=False, skip_unreadable=True)

    def tta_model(self, cfg: Config, num_classes: int) -> dict[str, Any]:
        from selftrain.mm.configs import det_tta_model

        return det_tta_model(cfg, num_classes=num_classes)  # the model's test_cfg.score_thr is the floor

    def tta_pipeline(self, cfg: Config, scales: list[float], flip: bool) -> list[dict[str, Any]]:
        from selftrain.mm.configs import det_tta_pipeline

        return det_tta_pipeline(cfg, scales, flip)

    def test_config(self, cfg: Config, work_dir: str, test: Any) -> Config:
        from selftrain.mm.configs import det_test_config

        return det_test_config(cfg, work_dir=work_dir, test=test)

    def metrics_from(self, raw: dict[str, Any]) -> dict[str, float]:
        metrics = {name: float(raw[f"coco/{name}"]) for name in self.metrics if f"coco/{name}" in raw}
        # CocoMetric returns nothing when the model detected nothing on the whole set: its
        # precision at every recall is 0, so every AP is 0.
        return metrics or {name: 0.0 for name in self.metrics}

    def label_image(self, image: dict, pred: Any, load_error: str, labeled_meta: dict) -> tuple[list, dict]:
        from selftrain.pseudo_sets import image_rows

        return image_rows(image, pred, load_error, labeled_meta["category_ids"])

    def shard_files(self, labels: list, stats: list[dict]) -> dict[str, bytes]:
        from storage.schemas import DET_IMAGE_STATS, PSEUDO_BOXES, table_from_rows, to_parquet_bytes

        return {
            "boxes.parquet": to_parquet_bytes(table_from_rows(labels, PSEUDO_BOXES), PSEUDO_BOXES),
            "stats.parquet": to_parquet_bytes(table_from_rows(stats, DET_IMAGE_STATS), DET_IMAGE_STATS),
        }

    def _pseudo_set(self) -> Any:
        from selftrain.pseudo_sets import PseudoBoxSet

        return PseudoBoxSet

    def stability_view(self, pred: Any, score_thr: float, class_thr: dict) -> Any:
        from selftrain.pseudo_labels import threshold_boxes

        inst = pred.pred_instances
        scores, labels = inst.scores.tolist(), inst.labels.tolist()
        keep = threshold_boxes(None, scores, labels, score_thr, class_thr)
        return inst.bboxes[keep].cpu().numpy(), [labels[i] for i in keep]

    def stability(self, views: list) -> float:
        from selftrain.stability import det_stability

        return det_stability(views)


class Segmentation(TaskKind):
    model_noun = "segmentor (EncoderDecoder)"
    import_formats = ("png",)

    def _importer(self) -> Any:
        from selftrain.mask_corrections import import_mask_corrections

        return import_mask_corrections

    def image_uris(self, store: ArtifactStore, registered: ArtifactRef) -> set[str]:
        return {p["img_path"] for p in store.read_json(registered, "pairs.json")}

    def builds(self, model_type: str) -> bool:
        return "EncoderDecoder" in model_type

    def local_set(self, store: ArtifactStore, ref: ArtifactRef, folder: str, name: str) -> Any:
        from selftrain.stage import local_seg

        return local_seg(store, ref, folder, name)

    def student_data(
        self, store: ArtifactStore, sources: Any, labeled: Any, folder: str, thresholds: Any
    ) -> tuple[Any, int, dict]:
        from selftrain.student_data import pseudo_seg

        return pseudo_seg(store, sources, labeled.classes, folder, thresholds)

    def train_config(self, cfg: Config, **kwargs: Any) -> Config:
        from selftrain.mm.configs import seg_train_config

        return seg_train_config(cfg, **kwargs)

    def test_model(self, cfg: Config, num_classes: int) -> dict[str, Any]:
        from selftrain.mm.configs import seg_model

        return seg_model(cfg, num_classes, pretrained=False)

    def test_pipeline(self, cfg: Config) -> list[dict[str, Any]]:
        from selftrain.mm.configs import seg_test_pipeline

        return seg_test_pipeline(cfg, with_ann=False, skip_unreadable=True)

    def tta_model(self, cfg: Config, num_classes: int) -> dict[str, Any]:
        from selftrain.mm.configs import seg_tta_model

        return seg_tta_model(cfg, num_classes, 0.0)  # every pixel labeled; its confidence is stored

    def tta_pipeline(self, cfg: Config, scales: list[float], flip: bool) -> list[dict[str, Any]]:
        from selftrain.mm.configs import seg_tta_pipeline

        return seg_tta_pipeline(cfg, scales, flip)

    def test_config(self, cfg: Config, work_dir: str, test: Any) -> Config:
        from selftrain.mm.configs import seg_test_config

        return seg_test_config(cfg, work_dir=work_dir, test=test)

    def metrics_from(self, raw: dict[str, Any]) -> dict[str, float]:
        # IoUMetric reports percentages; stored as fractions like the COCO metrics.
        return {name: float(raw[name]) / 100.0 for name in self.metrics if name in raw}

    def label_image(self, image: dict, pred: Any, load_error: str, labeled_meta: dict) -> tuple[list, dict]:
        from selftrain.pseudo_sets import mask_stats
        from storage.masks import quantize_confidence

        if load_error:
            return [], mask_stats(image, None, None, load_error)
        label = pred.pred_sem_seg.data[0].cpu().numpy().astype("uint8")  # the argmax of the averaged softmax
        confidence = pred.seg_confidence.data[0].cpu().numpy()
        return [(image["image_id"], label, quantize_confidence(confidence))], mask_stats(
            image, label, confidence, load_error
        )

    def shard_files(self, labels: list, stats: list[dict]) -> dict[str, bytes]:
        from storage.masks import encode_mask_shard
        from storage.schemas import MASK_INDEX, SEG_IMAGE_STATS, table_from_rows, to_parquet_bytes

        data, index = encode_mask_shard(sorted(labels, key=lambda m: m[0]), "masks.parquet")
        return {
            "masks.parquet": data,
            "index.parquet": to_parquet_bytes(index, MASK_INDEX),
            "stats.parquet": to_parquet_bytes(table_from_rows(stats, SEG_IMAGE_STATS), SEG_IMAGE_STATS),
        }

    def _pseudo_set(self) -> Any:
        from selftrain.pseudo_sets import PseudoMaskSet

        return PseudoMaskSet

    def stability_view(self, pred: Any, score_thr: float, class_thr: dict) -> Any:
        return pred.pred_sem_seg.data[0].cpu().numpy().astype("uint8")

    def stability(self, views: list) -> float:
        from selftrain.stability import seg_stability

        return seg_stability(views)


DETECTION = Detection(
    name="detection",
    config_folder="det",
    scope="mmdet",
    dataset_stage="dataset",
    pseudo_stage="pseudo_boxes",
    pseudo_version=2,  # 2: every box above the model's floor, thresholds applied per student
    main_metric="bbox_mAP",
    val_metric="coco/bbox_mAP",
    metrics=("bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "bbox_mAP_s", "bbox_mAP_m", "bbox_mAP_l"),
    metrics_description="COCO bbox metrics",
    default_config="det/retinanet_mnv2_256_cpu",
    tta_defaults="det_default.py",
    methods=("zoph", "st", "st++"),
    default_method="zoph",
    aug_presets=("S1", "S2", "S3", "S4"),
    thresholded_stability=True,
    batch_by_shape=False,
    # Zoph et al. 2020 §3.2: boxes above 0.5; st / st++ (this project's extension to boxes) alike
    default_score_threshold={"zoph": 0.5, "st": 0.5, "st++": 0.5},
    made="boxes",
    report_columns=(("bbox_mAP", "bbox mAP"), ("bbox_mAP_50", "mAP50"), ("bbox_mAP_75", "mAP75")),
)
SEGMENTATION = Segmentation(
    name="segmentation",
    config_folder="seg",
    scope="mmseg",
    dataset_stage="seg_dataset",
    pseudo_stage="pseudo_masks",
    pseudo_version=2,  # 2: the plain argmax and its 8-bit confidence, thresholds applied per student
    main_metric="mIoU",
    val_metric="mIoU",
    metrics=("mIoU", "mAcc", "aAcc"),
    metrics_description="mIoU metrics",
    default_config="seg/deeplabv3plus_mnv2_128_cpu",
    tta_defaults="seg_default.py",
    methods=("zoph", "st", "st++"),
    default_method="st++",
    aug_presets=("S1", "S2", "S3", "S4"),  # mmdet's policies, scoped for mmseg pipelines
    thresholded_stability=False,
    batch_by_shape=True,
    # ST++ (appendix; reference label.py): the plain argmax of the averaged softmax, no pixel
    # ignored; Zoph et al. 2020 (PASCAL): pixels below 0.5 confidence ignored
    default_score_threshold={"zoph": 0.5, "st": 0.0, "st++": 0.0},
    made="masks",
    report_columns=(("mIoU", "mIoU"), ("mAcc", "mAcc"), ("aAcc", "aAcc")),
)
KINDS: dict[str, TaskKind] = {k.name: k for k in (DETECTION, SEGMENTATION)}


def kind_of(registered: ArtifactRef) -> TaskKind:
    """The kind of a registered (labeled, held-out) set, from the stage that registered it.

    Raises ValueError naming the reference when it is not a registered set."""
    for kind in KINDS.values():
        if registered.stage == kind.dataset_stage:
            return kind
    stages = [k.dataset_stage for k in KINDS.values()]
    raise ValueError(f"{registered.uri} is not a registered dataset (stages: {stages})")
