"""The `self-training` flow (Zoph et al. 2020, "Rethinking Pre-training and Self-training").

Reads as the algorithm: train a teacher on the labelled set; shard the unlabeled images and
pseudo-label every shard with test-time augmentation; train a student on labelled + pseudo
data with loss normalisation; evaluate teacher and student on the held-out set; report.
Every step is a content-addressed stage in the store: a re-run with the same inputs returns
the stored references instead of recomputing, and a killed run resumes where it stopped.
"""

from __future__ import annotations

import os
from typing import Literal

from prefect import flow, get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tasks.evaluate import evaluate
from tasks.list_unlabeled import list_unlabeled
from tasks.pseudo_label_shard import pseudo_label_shard
from tasks.register_dataset import register_dataset
from tasks.shard_images import shard_images
from tasks.train_model import train_model
from tasks.write_report import write_report


class CocoSet(BaseModel):
    """A COCO detection set: annotation file and image root, at any fsspec URL or local path."""

    model_config = ConfigDict(extra="forbid")
    ann_file: str
    image_root: str


def _absolute(url: str) -> str:
    return url if "://" in url else os.path.abspath(url)


class SelfTrainingParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str = Field("deepforest", description="name of the dataset in the store (a folder)")
    labelled: CocoSet
    val: CocoSet = Field(description="held-out set for evaluation and best-checkpoint selection")
    unlabeled: str | list[str] = Field(description="a prefix holding the unlabeled images, or a list of image URLs")
    config: str = Field("det/retinanet_mnv2_256_cpu", description="model config under model_configs/ or a path")
    teacher_iters: int = Field(600, gt=0)
    student_iters: int = Field(600, gt=0)
    k: int = Field(3, gt=0, description="evenly spaced checkpoints kept per training")
    tta_scales: list[float] = Field([1.0], min_length=1)
    tta_flip: bool = True
    score_threshold: float = Field(0.5, ge=0.0, le=1.0)
    class_thresholds: dict[str, float] = Field({}, description="per-class score thresholds by class name")
    shard_size: int = Field(64, gt=0)
    alpha: float = Field(1.0, ge=0.0, description="weight of the pseudo loss in the normalised loss")
    aug: Literal["S1", "S2", "S3", "S4"] = "S1"
    init: Literal["teacher", "random"] = "teacher"
    pretrained: bool = Field(True, description="ImageNet-pretrained backbone (offline weights)")
    method: Literal["zoph"] = "zoph"
    store: str = Field("runs/store", description="artifact store root: a local folder or s3://bucket/prefix")
    seed: int = 0
    inference_batch_size: int = Field(8, gt=0)

    @field_validator("labelled", "val")
    @classmethod
    def _abs_set(cls, v: CocoSet) -> CocoSet:
        return CocoSet(ann_file=_absolute(v.ann_file), image_root=_absolute(v.image_root))

    @field_validator("unlabeled")
    @classmethod
    def _abs_unlabeled(cls, v):
        return _absolute(v) if isinstance(v, str) else [_absolute(u) for u in v]

    @field_validator("store")
    @classmethod
    def _abs_store(cls, v: str) -> str:
        return _absolute(v)

    @model_validator(mode="after")
    def _schedule(self):
        for name in ("teacher_iters", "student_iters"):
            if getattr(self, name) % self.k:
                raise ValueError(f"{name} ({getattr(self, name)}) must be a multiple of k ({self.k}) "
                                 "so the K checkpoints are evenly spaced")
        return self


# Shards run one at a time by default: each inference already uses every core (or the GPU).
# SELFTRAIN_SHARD_CONCURRENCY raises it; a Dask task runner spreads shards over a cluster.
SHARD_CONCURRENCY = int(os.environ.get("SELFTRAIN_SHARD_CONCURRENCY", "1"))


@flow(name="self-training", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=SHARD_CONCURRENCY))
def self_training(params: SelfTrainingParams) -> str:
    """Teacher -> TTA pseudo boxes on every shard -> student -> evaluation -> report."""
    log = get_run_logger()
    p, store = params, params.store
    labelled = register_dataset(store, p.dataset, p.labelled.ann_file, p.labelled.image_root, "labelled")
    val = register_dataset(store, p.dataset, p.val.ann_file, p.val.image_root, "val")
    unlabeled = list_unlabeled(store, p.dataset, p.unlabeled)

    # 1. Teacher on the labelled set, K evenly spaced checkpoints.
    teacher = train_model(store, p.config, labelled, val, role="teacher", iters=p.teacher_iters, k=p.k,
                          seed=p.seed, aug=p.aug, pretrained=p.pretrained)

    # 2-3. Shard the unlabeled images; TTA inference and thresholding per shard.
    shards = shard_images(store, unlabeled, p.shard_size)
    futures = [pseudo_label_shard.submit(store, p.config, teacher, shard, labelled, scales=p.tta_scales,
                                         flip=p.tta_flip, score_thr=p.score_threshold,
                                         class_thresholds=p.class_thresholds,
                                         batch_size=p.inference_batch_size) for shard in shards]
    pseudo = []
    for i, fut in enumerate(futures, start=1):
        pseudo.append(fut.result())
        log.info("pseudo-labelled shard %d/%d", i, len(futures))

    # 5. Student: half human / half pseudo batches, normalised loss, initialised from the teacher.
    student = train_model(store, p.config, labelled, val, role="student", iters=p.student_iters, k=p.k,
                          seed=p.seed, aug=p.aug, pretrained=p.pretrained,
                          init=teacher if p.init == "teacher" else None, pseudo=pseudo, alpha=p.alpha)

    # Evaluation of teacher and student on the held-out set, and the report.
    evaluations = {"teacher": evaluate(store, p.config, teacher, val),
                   "student": evaluate(store, p.config, student, val)}
    report = write_report(store, p.dataset, p.method, p.model_dump(mode="json"), evaluations, pseudo,
                          {"labelled": labelled, "val": val, "unlabeled": unlabeled, "teacher": teacher,
                           "student": student})
    log.info("report: %s", report.uri)
    return report.uri
