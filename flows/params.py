"""The parameters of the `self-training` flow: one validated object, checked when a run starts.

Every field is a deployment parameter (the Prefect UI's form, `prefect deployment run
--param name=value`, `selftrain run params.json`); validation names the field and the fix.
"""

from __future__ import annotations

import math
import os
import re
from typing import Any, Literal, TypeVar, cast

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator, model_serializer, model_validator

from selftrain.kinds import KINDS, TaskKind
from storage.store import ArtifactRef, check_no_credentials

Method = Literal["zoph", "st", "st++"]


class CocoSet(BaseModel):
    """A COCO detection set: annotation file and image root, at any fsspec URL or local path."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)  # a refused URL may hold a secret
    ann_file: str
    image_root: str

    def absolute(self) -> CocoSet:
        """The set with local paths made absolute (the flow may run elsewhere)."""
        return CocoSet(
            ann_file=_absolute(self.ann_file, "ann_file"), image_root=_absolute(self.image_root, "image_root")
        )

    def held_out_like(self, val: CocoSet) -> CocoSet:
        """The held-out set as this labeled set needs it (its classes are checked when it is
        registered, against the labeled set's)."""
        return val

    def register(self, store: str, dataset: str, role: str, like: ArtifactRef | None = None) -> ArtifactRef:
        """Register this set in the store (tasks/register_dataset.py); ``like``: the labeled
        set a held-out set must match (classes)."""
        from tasks.register_dataset import register_dataset

        return register_dataset(store, dataset, self.ann_file, self.image_root, role, like=like)


class SegSet(BaseModel):
    """A segmentation set: images and label maps (class indices, 255 = ignore) with the same
    names in two folders, at any fsspec URL or local path; classes in index order. Every image
    under ``img_dir`` ending in ``img_suffix`` belongs to it, or those a ``split`` file lists."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)  # a refused URL may hold a secret
    img_dir: str
    ann_dir: str
    classes: list[str] = Field(min_length=2, description="class names by label value, background first")
    img_suffix: str = ".jpg"
    seg_map_suffix: str = ".png"
    label_map: dict[int, int] = Field(
        {},
        description="stored label-map value -> class index, applied before "
        "training and evaluation, e.g. {255: 1} for binary masks "
        "stored as 0/255 (255 is otherwise the ignore label); the "
        "held-out set takes the labeled set's when it has none",
    )
    split: str | None = Field(
        None,
        description="a text file listing the set's images, one per line, as their paths under "
        "img_dir without img_suffix (mmseg's ann_file, e.g. PASCAL VOC's "
        "ImageSets/Segmentation/train.txt); without it, every image under img_dir ending in "
        "img_suffix belongs to the set",
    )

    @model_serializer(mode="wrap")
    def _without_default_split(self, handler: Any) -> Any:
        """The fields, without ``split`` when none is given: a report's key digests the run's
        parameters, so the sets of runs made before splits existed keep their keys."""
        data = handler(self)
        if isinstance(data, dict) and data.get("split") is None:
            data.pop("split", None)
        return data

    def absolute(self) -> SegSet:
        """The set with local paths made absolute (the flow may run elsewhere)."""
        update = {"img_dir": _absolute(self.img_dir, "img_dir"), "ann_dir": _absolute(self.ann_dir, "ann_dir")}
        if self.split is not None:
            update["split"] = _absolute(self.split, "split")
        return self.model_copy(update=update)

    def held_out_like(self, val: SegSet) -> SegSet:
        """The held-out set as this labeled set needs it: the same classes (ValueError
        otherwise), and this set's label_map when it has none - the same stored values mean
        the same classes (e.g. 0/255 masks), or mIoU would be computed on nothing."""
        if self.label_map and not val.label_map:
            val = val.model_copy(update={"label_map": dict(self.label_map)})
        if list(self.classes) != list(val.classes):
            raise ValueError(
                f"val.classes {val.classes} must equal labeled.classes {self.classes} "
                "(the same class index means the same class in both sets)"
            )
        return val

    def register(self, store: str, dataset: str, role: str, like: ArtifactRef | None = None) -> ArtifactRef:
        """Register this set in the store (tasks/register_seg_dataset.py); the classes are
        this set's own (the parameters check that labeled and held-out sets agree)."""
        from tasks.register_seg_dataset import register_seg_dataset

        return register_seg_dataset(
            store,
            dataset,
            self.img_dir,
            self.ann_dir,
            self.classes,
            role,
            self.img_suffix,
            self.seg_map_suffix,
            label_map=self.label_map,
            split=self.split,
        )


SET_TYPES = {"detection": CocoSet, "segmentation": SegSet}  # the parameters each kind's sets take


def _absolute(url: str, what: str = "location") -> str:
    """A local path made absolute, environment variables and a leading '~' expanded where the
    flow runs (a deployment's '${SELFTRAIN_DATA}/coco/...' resolves on the worker); URLs as
    given. An empty or blank value is refused (it would name the working folder)."""
    if not url.strip():
        raise ValueError(f"{what} is empty: give a path or a URL (an empty path would mean the working folder)")
    expanded = os.path.expanduser(os.path.expandvars(url))
    if "${" in expanded or re.search(r"\$[A-Za-z_]", expanded):
        missing = sorted(set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", expanded)))
        raise ValueError(
            f"{url!r} names the environment variable(s) {missing}, not set where the flow runs "
            "(set them in the worker's environment or the work pool's job variables)"
        )
    check_no_credentials(expanded, what)
    if "://" in expanded and not expanded.split("://", 1)[1].strip("/"):
        raise ValueError(f"{what} {url!r} names no bucket or host: give e.g. s3://bucket/prefix")
    return expanded if "://" in expanded else os.path.abspath(expanded)


T = TypeVar("T")


def _resolved(value: T | None, name: str) -> T:
    if value is None:
        raise RuntimeError(f"{name} is resolved when the parameters are validated")
    return value


#: Parameter names that were renamed: old name -> new name. A run given an old name still
#: works (the value moves to the new name) and logs a deprecation message naming both.
RENAMED = {"labelled": "labeled"}


def rename_deprecated(values: dict, warn=None) -> dict:
    """``values`` with every old parameter name of RENAMED replaced by its new name.

    ``warn(message)`` is called once per old name found (default: warnings.warn with a
    FutureWarning, which Python shows by default, unlike a DeprecationWarning raised outside
    ``__main__``). Raises ValueError when both the old and the new name are given."""
    import warnings

    out = dict(values)
    for old, new in RENAMED.items():
        if old not in out:
            continue
        value = out.pop(old)
        if value is None:  # the flow's signature passes None for a deprecated name not given
            continue
        if out.get(new) is not None:
            raise ValueError(f"parameter {old!r} is the deprecated name of {new!r}: give only {new!r}")
        out[new] = value
        message = f"parameter {old!r} is deprecated and will be removed; use {new!r}"
        (warn or (lambda m: warnings.warn(m, FutureWarning, stacklevel=3)))(message)
    return out


class SelfTrainingParams(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)  # a refused URL may hold a secret

    @field_validator("inference_batch_size", mode="before")
    @classmethod
    def _batch_size_not_a_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(f"inference_batch_size must be 'auto' or an int >= 1, not {value!r}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, values):
        return rename_deprecated(values) if isinstance(values, dict) else values

    dataset: str = Field("deepforest", description="name of the dataset in the store (a folder)")
    task: Literal["detection", "segmentation"] = "detection"
    labeled: CocoSet | SegSet = Field(description="COCO set (detection) or image/label-map folders (segmentation)")
    val: CocoSet | SegSet = Field(description="held-out set for evaluation and best-checkpoint selection")
    unlabeled: str | list[str] = Field(description="a prefix holding the unlabeled images, or a list of image URLs")
    config: str | None = Field(
        None, description="model config under model_configs/ or a path; default: the CPU config of the task"
    )
    method: Method | list[Method] | None = Field(
        None,
        description="student method(s): zoph, st, st++; several share one teacher and its pseudo "
        "labels; default (empty): zoph for detection, st++ for segmentation",
    )
    rounds: int = Field(1, ge=1, description="rounds > 1: each student becomes the next round's teacher")
    teacher_iters: int = Field(600, gt=0, description="the teacher's schedule, in iterations (a multiple of k)")
    student_iters: int | None = Field(
        None,
        gt=0,
        description="default (empty): the papers' schedules - a zoph student trains as long as its teacher "
        "(Zoph et al. 2020); an st / st++ student (each ST++ phase) for as many epochs over its own training "
        "set as the teacher over the labeled set (the ST++ reference code), about 2U/L times the teacher's "
        "iterations; a number: every student trains that many iterations (a multiple of k)",
    )
    k: int = Field(3, gt=0, description="evenly spaced checkpoints kept per training")
    tta_scales: list[float] | None = Field(
        None, min_length=1, description="default: 1.0 (detection), 0.5..1.75 (segmentation)"
    )
    tta_flip: bool = True
    score_threshold: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="box score threshold (detection) or pixel confidence threshold (segmentation), applied "
        "when a student's set is built (pseudo labeling stores every label with its score, so changing it "
        "costs no inference); default (empty): each method's paper - 0.5 for boxes (Zoph et al.), none for "
        "st / st++ masks (ST++ takes the plain argmax), 0.5 for zoph masks; with an adaptive threshold_rule, "
        "the value of classes with too few labels",
    )
    threshold_rule: Literal["fixed", "quantile", "mixture"] = Field(
        "fixed",
        description="how each class's threshold is chosen from the stored scores, without ground truth: "
        "'fixed' (score_threshold, the papers), 'quantile' (each class keeps its top threshold_keep share), "
        "'mixture' (per class, where a two-component Gaussian mixture of the scores starts its high "
        "component, as Consistent Teacher); class_thresholds override any rule",
    )
    threshold_keep: float = Field(
        0.5, gt=0.0, le=1.0, description="threshold_rule 'quantile': the share of each class's labels kept"
    )
    reliable_fraction: float = Field(0.5, gt=0.0, le=1.0, description="st++: share of images ranked reliable")
    class_thresholds: dict[str, float] = Field(
        {}, description="per-class score (boxes) or confidence (pixels) thresholds by class name"
    )
    shard_size: int = Field(64, gt=0)
    alpha: float = Field(
        1.0, ge=0.0, allow_inf_nan=False, description="weight of the pseudo loss in the normalised loss"
    )
    normalize_loss: bool = Field(
        True,
        description="zoph students: Zoph et al.'s loss normalisation (default); off: the plain weighted loss "
        "Lh + alpha * Lp (an ablation, the paper's Appendix B baseline)",
    )
    aug: Literal["S1", "S2", "S3", "S4"] = Field(
        "S1", description="augmentation preset of zoph students and of their teacher (Zoph et al. S1..S4)"
    )
    teacher_aug: Literal["S1", "S2", "S3", "S4", "weak"] | None = Field(
        None,
        description="the teacher's augmentation; default (empty): 'weak' (resize 0.5..2.0, crop, flip, as the "
        "ST++ reference trains its teacher) when every method is st / st++, else the aug preset",
    )
    zoph_batch: Literal["double", "split"] = Field(
        "double",
        description="zoph students: 'double' (the paper: the teacher's batch of human images plus as many "
        "pseudo-labeled ones) or 'split' (the teacher's batch, half human, half pseudo: half the compute)",
    )
    strong_aug: str = Field(
        "strong",
        description="st / st++ students: the strong augmentation of their pseudo-labeled images, a file "
        "model_configs/aug/strong*.py - 'strong' (default): the ST++ reference's colour jitter, grayscale, "
        "blur and CutOut; 'strong_no_hue': the same without the hue jitter (for classes told apart by "
        "colour) - or 'none' (the weak augmentation only); anything but 'strong' is not the papers' recipe",
    )
    init: Literal["teacher", "random"] = "teacher"
    pretrained: bool = Field(True, description="ImageNet-pretrained backbone (offline weights)")
    store: str = Field("runs/store", description="artifact store root: a local folder or s3://bucket/prefix")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="random seed (mmengine accepts 0 .. 2^32-1)")
    inference_batch_size: Literal["auto"] | PositiveInt = Field(
        "auto",
        description="images per pseudo-labeling and stability-scoring batch. 'auto': measured on each "
        "device by the first shard that runs there (batch sizes 1, 2, 4, ... and DataLoader worker "
        "counts, on the shard's first 16 images; 64 on a GPU; a smaller shard runs batch 4) and stored "
        "per device, model config and TTA, so later shards and runs reuse it; an int fixes it "
        "(DataLoader workers: the device's default)",
    )
    inference_precision: Literal["fp32", "amp"] = Field(
        "fp32",
        description="pseudo labeling and stability scoring: 'fp32', or 'amp' - the network (backbone, "
        "neck, heads) under mixed precision (float16 on a GPU, bfloat16 on a CPU), box decoding, NMS and "
        "the TTA merge in float32; labels can differ slightly (benchmarks/throughput.py --amp measures "
        "the speed and the agreement); part of the pseudo labels' key",
    )
    retrain_student: bool = Field(
        True,
        description="False: only pseudo-label (new) unlabeled images with the "
        "teacher, no student training (a re-labeling run)",
    )
    teacher: str | None = Field(
        None,
        description="use a trained teacher instead of training one: 'latest' (the "
        "newest completed teacher of this dataset and config in the "
        "store) or 'train/<key>'; required when retrain_student is "
        "false, so that re-labeling never trains a model",
    )
    unlabeled_gt: str | None = Field(
        None,
        description="ground truth of the unlabeled images, for the report's "
        "pseudo-label quality diagnostic only (never trained on): a "
        "COCO file (detection) or a label-map folder (segmentation)",
    )

    @field_validator("labeled", "val")
    @classmethod
    def _abs_set(cls, v):
        return v.absolute()

    @field_validator("unlabeled")
    @classmethod
    def _abs_unlabeled(cls, v):
        if isinstance(v, str):
            return _absolute(v, "unlabeled")
        if not v:
            raise ValueError("unlabeled is an empty list: give a prefix or at least one image URL")
        return [_absolute(u, "unlabeled") for u in v]

    @field_validator("store")
    @classmethod
    def _abs_store(cls, v: str) -> str:
        return _absolute(v, "store")

    @field_validator("unlabeled_gt")
    @classmethod
    def _abs_gt(cls, v: str | None) -> str | None:
        return None if v is None else _absolute(v, "unlabeled_gt")

    @field_validator("dataset")
    @classmethod
    def _dataset_name(cls, v: str) -> str:
        from storage.keys import check_name

        return check_name("dataset", v)

    @field_validator("method")
    @classmethod
    def _some_method(cls, v):
        if isinstance(v, list) and not v:
            raise ValueError("method names at least one student method (zoph, st, st++)")
        return v

    @field_validator("class_thresholds")
    @classmethod
    def _class_thresholds(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {name: t for name, t in v.items() if not (math.isfinite(t) and 0.0 <= t <= 1.0)}
        if bad:
            raise ValueError(f"class_thresholds must be scores in [0, 1]; got {bad}")
        return v

    @field_validator("tta_scales")
    @classmethod
    def _scales(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and not all(math.isfinite(s) and 0.0 < s <= 8.0 for s in v):
            raise ValueError(f"tta_scales must be positive factors of the test size (0 < s <= 8), got {v}")
        return v

    @property
    def kind(self) -> TaskKind:
        """Everything that differs between detection and segmentation (selftrain/kinds.py)."""
        return KINDS[self.task]

    @property
    def methods(self) -> list[str]:
        if self.method is None:
            return [self.kind.default_method]
        return [self.method] if isinstance(self.method, str) else list(dict.fromkeys(self.method))

    @model_validator(mode="after")
    def _task(self):
        kind, set_type = self.kind, SET_TYPES[self.task]
        if self.method is None:
            self.method = cast(Method, kind.default_method)
        for name in ("labeled", "val"):
            if not isinstance(getattr(self, name), set_type):
                raise ValueError(f"{name} must be a {(set_type.__doc__ or '').split(':')[0]} for task {self.task}")
        unsupported = [m for m in self.methods if m not in kind.methods]
        if unsupported:
            raise ValueError(f"method(s) {unsupported} are not available for {kind.name}; use {list(kind.methods)}")
        if not self.retrain_student and self.teacher is None:
            raise ValueError(
                "a re-labeling run (retrain_student=false) labels with a trained model: set teacher "
                "to 'latest' (the newest teacher of this dataset in the store) or 'train/<key>'"
            )
        if "st++" in self.methods and self.k < 2:
            raise ValueError("st++ ranks by the stability of the teacher's checkpoints: k must be at least 2")
        self.val = self.labeled.held_out_like(cast(Any, self.val))  # both of the kind's set type (checked above)
        if self.config is None:
            self.config = kind.default_config
        if self.tta_scales is None:
            per_method = {m: kind.default_tta_scales(m) for m in self.methods}
            if len(set(per_method.values())) > 1:
                raise ValueError(
                    f"the methods' papers use different TTA scales ({per_method}): set tta_scales, or run the "
                    "methods in separate runs"
                )
            self.tta_scales = list(next(iter(per_method.values())))
        if self.teacher_aug is None:
            self.teacher_aug = "weak" if all(m in ("st", "st++") for m in self.methods) else self.aug
        self._check_config(self.config)
        return self

    # What validation resolved (typed without None): the model config, the TTA scales and the
    # teacher's augmentation. Raises RuntimeError on a model that skipped validation.
    @property
    def config_name(self) -> str:
        return _resolved(self.config, "config")

    @property
    def scales(self) -> list[float]:
        return _resolved(self.tta_scales, "tta_scales")

    @property
    def teacher_augmentation(self) -> str:
        return _resolved(self.teacher_aug, "teacher_aug")

    def threshold_of(self, method: str) -> float:
        """The fixed (or fallback) pseudo-label threshold of ``method``'s students: score_threshold,
        else the method's paper (selftrain/kinds.py default_score_threshold)."""
        if self.score_threshold is not None:
            return self.score_threshold
        return self.kind.default_score_threshold[method]

    def _check_config(self, config: str) -> None:
        """The model config exists, is of the task's kind and suits the chosen recipe: checked
        when the flow starts, before any work."""
        from selftrain.mm.configs import ConfigError

        kind = self.kind
        try:
            cfg = kind.load_config(config)
        except ConfigError as exc:
            raise ValueError(str(exc)) from exc
        model_type = str(cfg.get("model", {}).get("type", ""))
        if not kind.builds(model_type):
            raise ValueError(
                f"config {self.config!r} builds a {model_type or 'model without a type'}, not a "
                f"{kind.model_noun} for task {self.task}"
            )
        if "zoph" in self.methods and self.zoph_batch == "split" and int(cfg.get("batch_size", 2)) % 2:
            raise ValueError(
                f"zoph_batch 'split' halves each batch into human and pseudo images: config {self.config!r} has "
                f"an odd batch_size {cfg.batch_size} (use zoph_batch 'double', the paper's)"
            )
        if self.teacher_aug not in (*kind.aug_presets, "weak"):
            raise ValueError(
                f"teacher_aug {self.teacher_aug} holds detection policies (AutoAugment / RandAugment); "
                f"{kind.name} supports {', '.join(kind.aug_presets)} or weak"
            )
        if self.strong_aug != "strong":
            from selftrain.mm.configs import strong_transforms

            try:
                kind.check_transforms(strong_transforms(kind.config_folder, self.strong_aug))
            except ConfigError as exc:
                raise ValueError(f"strong_aug: {exc}") from exc
            if not {"st", "st++"} & set(self.methods):
                raise ValueError(
                    f"strong_aug {self.strong_aug!r} applies to st / st++ students only; methods: {self.methods}"
                )
        if self.aug not in kind.aug_presets:
            raise ValueError(
                f"augmentation preset {self.aug} holds detection policies (AutoAugment / RandAugment); "
                f"{kind.name} supports {', '.join(kind.aug_presets)}"
            )

    @model_validator(mode="after")
    def _schedule(self):
        for name in ("teacher_iters", "student_iters"):
            if getattr(self, name) is not None and getattr(self, name) % self.k:
                raise ValueError(
                    f"{name} ({getattr(self, name)}) must be a multiple of k ({self.k}) "
                    "so the K checkpoints are evenly spaced"
                )
        return self
