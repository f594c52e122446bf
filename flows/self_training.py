"""The `self-training` flow: Zoph et al. 2020 ("Rethinking Pre-training and Self-training") and
ST / ST++ (Yang et al. 2022), for detection (mmdet) and semantic segmentation (mmseg).

Reads as the algorithms (docs/design.md §2):
1. train a teacher on the labelled set, keeping K evenly spaced checkpoints;
2. shard the unlabeled images and pseudo-label every shard with test-time augmentation;
3. train the student:
   - zoph: from the teacher, half human / half pseudo batches, normalised loss (detection);
   - st:   re-initialised, labelled oversampled, strong augmentation on pseudo images;
   - st++: rank the images by the stability of the teacher's K checkpoints; phase 1 on the
           labelled + reliable images; the phase-1 student re-labels the unreliable ones
           (TTA); phase 2 on everything;
   with rounds > 1 each student is the next round's teacher;
4. evaluate teacher and students on the held-out set; report.
Every step is a content-addressed stage in the store: a re-run with the same inputs returns
the stored references instead of recomputing, and a killed run resumes where it stopped;
methods run in one flow share the teacher, its pseudo labels and its ranking.
"""

from __future__ import annotations

import inspect
import math
import os
import re
from typing import Annotated, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from selftrain.kinds import KINDS, TaskKind
from selftrain.pseudo_labels import label_params, labeller_key
from selftrain.stage import get_store
from tasks.evaluate import evaluate
from tasks.find_model import find_model
from tasks.list_unlabeled import list_unlabeled
from tasks.pseudo_label_shard import pseudo_label_shard
from tasks.rank_by_stability import rank_by_stability
from tasks.register_dataset import register_dataset
from tasks.register_seg_dataset import register_seg_dataset
from tasks.score_stability import score_stability
from tasks.select_images import select_images
from tasks.shard_images import shard_images
from tasks.train_model import train_model
from tasks.write_report import write_report

Method = Literal["zoph", "st", "st++"]


class CocoSet(BaseModel):
    """A COCO detection set: annotation file and image root, at any fsspec URL or local path."""

    model_config = ConfigDict(extra="forbid")
    ann_file: str
    image_root: str


class SegSet(BaseModel):
    """A segmentation set: images and label maps (class indices, 255 = ignore) with the same
    names in two folders, at any fsspec URL or local path; classes in index order."""

    model_config = ConfigDict(extra="forbid")
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


SET_TYPES = {"detection": CocoSet, "segmentation": SegSet}  # the parameters each kind's sets take


def _absolute(url: str) -> str:
    """A local path made absolute, environment variables expanded where the flow runs (a
    deployment's '${SELFTRAIN_DATA}/coco/...' resolves on the worker); URLs as given."""
    expanded = os.path.expandvars(url)
    if "${" in expanded or re.search(r"\$[A-Za-z_]", expanded):
        missing = sorted(set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", expanded)))
        raise ValueError(
            f"{url!r} names the environment variable(s) {missing}, not set where the flow runs "
            "(set them in the worker's environment or the work pool's job variables)"
        )
    return expanded if "://" in expanded else os.path.abspath(expanded)


class SelfTrainingParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str = Field("deepforest", description="name of the dataset in the store (a folder)")
    task: Literal["detection", "segmentation"] = "detection"
    labelled: CocoSet | SegSet = Field(description="COCO set (detection) or image/label-map folders (segmentation)")
    val: CocoSet | SegSet = Field(description="held-out set for evaluation and best-checkpoint selection")
    unlabeled: str | list[str] = Field(description="a prefix holding the unlabeled images, or a list of image URLs")
    config: str | None = Field(
        None, description="model config under model_configs/ or a path; default: the CPU config of the task"
    )
    method: Method | list[Method] = Field(
        "zoph",
        description="student method(s): zoph (detection), st, st++; several share one teacher and its pseudo labels",
    )
    rounds: int = Field(1, ge=1, description="rounds > 1: each student becomes the next round's teacher")
    teacher_iters: int = Field(600, gt=0)
    student_iters: int = Field(600, gt=0)
    k: int = Field(3, gt=0, description="evenly spaced checkpoints kept per training")
    tta_scales: list[float] | None = Field(
        None, min_length=1, description="default: 1.0 (detection), 0.5..1.75 (segmentation)"
    )
    tta_flip: bool = True
    score_threshold: float = Field(
        0.5, ge=0.0, le=1.0, description="box score threshold (detection) or pixel confidence threshold (segmentation)"
    )
    reliable_fraction: float = Field(0.5, gt=0.0, le=1.0, description="st++: share of images ranked reliable")
    class_thresholds: dict[str, float] = Field({}, description="per-class score thresholds by class name")
    shard_size: int = Field(64, gt=0)
    alpha: float = Field(
        1.0, ge=0.0, allow_inf_nan=False, description="weight of the pseudo loss in the normalised loss"
    )
    aug: Literal["S1", "S2", "S3", "S4"] = "S1"
    init: Literal["teacher", "random"] = "teacher"
    pretrained: bool = Field(True, description="ImageNet-pretrained backbone (offline weights)")
    store: str = Field("runs/store", description="artifact store root: a local folder or s3://bucket/prefix")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="random seed (mmengine accepts 0 .. 2^32-1)")
    inference_batch_size: int = Field(8, gt=0)
    retrain_student: bool = Field(
        True,
        description="False: only pseudo-label (new) unlabeled images with the "
        "teacher, no student training (a re-labelling run)",
    )
    teacher: str | None = Field(
        None,
        description="use a trained teacher instead of training one: 'latest' (the "
        "newest completed teacher of this dataset and config in the "
        "store) or 'train/<key>'; required when retrain_student is "
        "false, so that re-labelling never trains a model",
    )
    unlabeled_gt: str | None = Field(
        None,
        description="ground truth of the unlabeled images, for the report's "
        "pseudo-label quality diagnostic only (never trained on): a "
        "COCO file (detection) or a label-map folder (segmentation)",
    )

    @field_validator("labelled", "val")
    @classmethod
    def _abs_set(cls, v):
        if isinstance(v, CocoSet):
            return CocoSet(ann_file=_absolute(v.ann_file), image_root=_absolute(v.image_root))
        return v.model_copy(update={"img_dir": _absolute(v.img_dir), "ann_dir": _absolute(v.ann_dir)})

    @field_validator("unlabeled")
    @classmethod
    def _abs_unlabeled(cls, v):
        return _absolute(v) if isinstance(v, str) else [_absolute(u) for u in v]

    @field_validator("store")
    @classmethod
    def _abs_store(cls, v: str) -> str:
        return _absolute(v)

    @field_validator("unlabeled_gt")
    @classmethod
    def _abs_gt(cls, v: str | None) -> str | None:
        return None if v is None else _absolute(v)

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
        return [self.method] if isinstance(self.method, str) else list(dict.fromkeys(self.method))

    @model_validator(mode="after")
    def _task(self):
        kind, set_type = self.kind, SET_TYPES[self.task]
        for name in ("labelled", "val"):
            if not isinstance(getattr(self, name), set_type):
                raise ValueError(f"{name} must be a {set_type.__doc__.split(':')[0]} for task {self.task}")
        unsupported = [m for m in self.methods if m not in kind.methods]
        if unsupported:
            raise ValueError(f"method(s) {unsupported} are not available for {kind.name}; use {list(kind.methods)}")
        if self.class_thresholds and not kind.per_class_thresholds:
            raise ValueError(f"class_thresholds apply to detection; {kind.name} has one confidence threshold")
        if not self.retrain_student and self.teacher is None:
            raise ValueError(
                "a re-labelling run (retrain_student=false) labels with a trained model: set teacher "
                "to 'latest' (the newest teacher of this dataset in the store) or 'train/<key>'"
            )
        if "st++" in self.methods and self.k < 2:
            raise ValueError("st++ ranks by the stability of the teacher's checkpoints: k must be at least 2")
        if isinstance(self.labelled, SegSet) and self.labelled.label_map and not self.val.label_map:
            # the same stored values mean the same classes: a held-out set stored like the
            # labeled one (e.g. 0/255 masks) must be mapped alike, or mIoU is computed on nothing
            self.val = self.val.model_copy(update={"label_map": dict(self.labelled.label_map)})
        if isinstance(self.labelled, SegSet) and list(self.labelled.classes) != list(self.val.classes):
            raise ValueError(
                f"val.classes {self.val.classes} must equal labelled.classes {self.labelled.classes} "
                "(the same class index means the same class in both sets)"
            )
        if self.config is None:
            self.config = kind.default_config
        if self.tta_scales is None:
            self.tta_scales = list(kind.default_tta_scales)
        self._check_config()
        return self

    def _check_config(self) -> None:
        """The model config exists, is of the task's kind and suits the chosen recipe: checked
        when the flow starts, before any work."""
        from selftrain.mm.configs import ConfigError

        kind = self.kind
        try:
            cfg = kind.load_config(self.config)
        except ConfigError as exc:
            raise ValueError(str(exc)) from exc
        model_type = str(cfg.get("model", {}).get("type", ""))
        if (kind.scope == "mmseg") != ("EncoderDecoder" in model_type):
            raise ValueError(
                f"config {self.config!r} builds a {model_type or 'model without a type'}, not a "
                f"{'segmentor (EncoderDecoder)' if kind.scope == 'mmseg' else 'detector'} for task {self.task}"
            )
        if "zoph" in self.methods and int(cfg.get("batch_size", 2)) % 2:
            raise ValueError(
                f"method zoph splits each batch half human / half pseudo: config {self.config!r} has "
                f"an odd batch_size {cfg.batch_size}"
            )
        if self.aug not in kind.aug_presets:
            raise ValueError(
                f"augmentation preset {self.aug} holds detection policies (AutoAugment / RandAugment); "
                f"{kind.name} supports {', '.join(kind.aug_presets)}"
            )

    @model_validator(mode="after")
    def _schedule(self):
        for name in ("teacher_iters", "student_iters"):
            if getattr(self, name) % self.k:
                raise ValueError(
                    f"{name} ({getattr(self, name)}) must be a multiple of k ({self.k}) "
                    "so the K checkpoints are evenly spaced"
                )
        return self


# Shards run one at a time by default: each inference already uses every core (or the GPU).
# SELFTRAIN_SHARD_CONCURRENCY raises it; SELFTRAIN_DASK_ADDRESS (a Dask scheduler, e.g.
# tcp://10.0.0.5:8786) maps shard inference and stability scoring over that cluster instead.
SHARD_CONCURRENCY = int(os.environ.get("SELFTRAIN_SHARD_CONCURRENCY", "1"))


def task_runner():
    """The flow's task runner, by configuration: a Dask cluster given its address, else threads."""
    address = os.environ.get("SELFTRAIN_DASK_ADDRESS")
    if address:
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=address)
    return ThreadPoolTaskRunner(max_workers=SHARD_CONCURRENCY)


def pseudo_label_all(p: SelfTrainingParams, model, unlabeled, labelled, what: str):
    """Pseudo-label every unlabeled image with ``model`` (TTA): images it already labelled keep
    their shards untouched, new images form new shards; shards run in parallel up to the task
    runner. Returns (pseudo-label refs, the shard plan)."""
    log = get_run_logger()
    labeller = labeller_key(
        model, labelled, label_params(p.tta_scales, p.tta_flip, p.score_threshold, p.class_thresholds)
    )
    plan = shard_images(p.store, unlabeled, p.shard_size, labeller=labeller)
    shards = plan.shards
    futures = [
        pseudo_label_shard.submit(
            p.store,
            p.config,
            model,
            shard,
            labelled,
            scales=p.tta_scales,
            flip=p.tta_flip,
            score_thr=p.score_threshold,
            class_thresholds=p.class_thresholds,
            batch_size=p.inference_batch_size,
        )
        for shard in shards
    ]
    # A progress artifact in the UI, updated as shards finish (reused shards finish at once).
    progress = create_progress_artifact(
        progress=0.0,
        description=f"pseudo labelling by the {what}: "
        f"{plan.new_images} new of {plan.images} images, {len(shards)} shards",
    )
    refs = []
    for i, fut in enumerate(futures, start=1):
        refs.append(fut.result())
        update_progress_artifact(progress, progress=100.0 * i / len(futures))
        log.info("%s: pseudo-labelled shard %d/%d", what, i, len(futures))
    return refs, plan


def check_class_thresholds(class_thresholds: dict[str, float], classes: list[str]) -> None:
    """Every per-class threshold names a class of the labeled set (checked before training)."""
    unknown = sorted(set(class_thresholds) - set(classes))
    if unknown:
        raise ValueError(f"class_thresholds names unknown classes {unknown}; the labeled set's classes are {classes}")


def rank_images(p: SelfTrainingParams, teacher, shards, labelled):
    """ST++ ranking: stability of the teacher's K checkpoints per shard, then the top fraction."""
    futures = [
        score_stability.submit(
            p.store,
            p.config,
            teacher,
            shard,
            labelled,
            score_thr=p.score_threshold,
            class_thresholds=p.class_thresholds,
            batch_size=p.inference_batch_size,
        )
        for shard in shards
    ]
    return rank_by_stability(p.store, [f.result() for f in futures], p.reliable_fraction)


def flat_parameters(model: type[BaseModel]):
    """Give a ``**kwargs`` flow the fields of ``model`` as its signature, so that a deployment's
    parameters are the fields themselves: `prefect deployment run ... --param score_threshold=0.4`
    and the UI's form change one field and keep the others (Prefect merges parameters one
    level deep). The model validates them in the flow."""
    fields = model.model_fields
    params = [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            default=inspect.Parameter.empty if f.is_required() else f.default,
            annotation=Annotated[f.annotation, Field(description=f.description)],
        )
        for name, f in fields.items()
    ]

    def decorate(fn):
        fn.__signature__ = inspect.Signature(params, return_annotation=str)
        fn.__annotations__ = {p.name: p.annotation for p in params} | {"return": str}
        return fn

    return decorate


def run(params: SelfTrainingParams) -> str:
    """Run the flow with a validated parameter object (the demo's and benchmarks' entry)."""
    return self_training(**params.model_dump(mode="json"))


@flow(name="self-training", log_prints=True, validate_parameters=False, task_runner=task_runner())
@flat_parameters(SelfTrainingParams)
def self_training(**fields) -> str:
    """Teacher -> TTA pseudo labels on every shard -> student(s) -> evaluation -> report."""
    log = get_run_logger()
    p = SelfTrainingParams(**fields)
    store = p.store
    if isinstance(p.labelled, CocoSet):
        labelled = register_dataset(store, p.dataset, p.labelled.ann_file, p.labelled.image_root, "labelled")
        val = register_dataset(store, p.dataset, p.val.ann_file, p.val.image_root, "val", like=labelled)
        check_class_thresholds(p.class_thresholds, get_store(store).manifest(labelled).meta["classes"])
    else:
        labelled, val = (
            register_seg_dataset(
                store,
                p.dataset,
                s.img_dir,
                s.ann_dir,
                s.classes,
                role,
                s.img_suffix,
                s.seg_map_suffix,
                label_map=s.label_map,
            )
            for s, role in ((p.labelled, "labelled"), (p.val, "val"))
        )
    unlabeled = list_unlabeled(store, p.dataset, p.unlabeled)
    train = dict(iters=p.student_iters, k=p.k, aug=p.aug, pretrained=p.pretrained)

    # 1. Teacher on the labelled set, K evenly spaced checkpoints (or the trained one named).
    if p.teacher:
        teacher = find_model(store, p.dataset, p.teacher, p.config)
    else:
        teacher = train_model(
            store,
            p.config,
            labelled,
            val,
            role="teacher",
            iters=p.teacher_iters,
            k=p.k,
            seed=p.seed,
            aug=p.aug,
            pretrained=p.pretrained,
        )
    models, ranking = {"teacher": teacher}, None
    # 2. TTA pseudo labels of every unlabeled image by the teacher (only new images cost work).
    first_pseudo, first_plan = pseudo_label_all(p, teacher, unlabeled, labelled, "teacher")
    log.info("%d of %d unlabeled images were new", first_plan.new_images, first_plan.images)

    for method in p.methods if p.retrain_student else []:
        current = teacher
        for r in range(1, p.rounds + 1):
            seed = p.seed + r - 1
            name = method if p.rounds == 1 else f"{method}-round{r}"
            pseudo, plan = (
                (first_pseudo, first_plan)
                if r == 1
                else pseudo_label_all(p, current, unlabeled, labelled, f"{name} teacher")
            )
            # 3. The student.
            if method == "zoph":
                student = train_model(
                    store,
                    p.config,
                    labelled,
                    val,
                    role="student",
                    seed=seed,
                    **train,
                    init=current if p.init == "teacher" else None,
                    pseudo=pseudo,
                    method="zoph",
                    alpha=p.alpha,
                )
            elif method == "st":
                student = train_model(
                    store, p.config, labelled, val, role="student", seed=seed, **train, pseudo=pseudo, method="st"
                )
            else:  # st++
                rank = rank_images(p, current, plan.shards, labelled)
                ranking = ranking or rank
                phase1 = train_model(
                    store,
                    p.config,
                    labelled,
                    val,
                    role="student",
                    seed=seed,
                    **train,
                    pseudo=pseudo,
                    method="st",
                    reliable_only=rank,
                )
                unreliable = select_images(store, unlabeled, rank, reliable=False)
                relabelled, _ = pseudo_label_all(p, phase1, unreliable, labelled, f"{name} phase-1 student")
                student = train_model(
                    store,
                    p.config,
                    labelled,
                    val,
                    role="student",
                    seed=seed,
                    **train,
                    pseudo=pseudo,
                    method="st",
                    reliable_only=rank,
                    relabelled=relabelled,
                )
                models[f"{name} phase 1"] = phase1
            models[name] = student
            current = student

    # 4. Evaluation of every model on the held-out set, and the report.
    evaluations = {name: evaluate(store, p.config, m, val) for name, m in models.items()}
    report = write_report(
        store,
        p.dataset,
        "+".join(p.methods),
        p.model_dump(mode="json"),
        evaluations,
        first_pseudo,
        {"labelled": labelled, "val": val, "unlabeled": unlabeled, **models},
        ranking=ranking,
        plan=first_plan,
    )
    log.info("report: %s", report.uri)
    return report.uri
