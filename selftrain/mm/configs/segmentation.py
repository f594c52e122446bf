"""Segmentation stage configs (mmseg): teacher, ST / ST++ and Zoph et al. students, test, TTA model."""

from __future__ import annotations

from mmengine.config import Config

from selftrain.mm.configs.datasets import SegSource, count_images, fill_pairs
from selftrain.mm.configs.files import STRONG, WEAK, ConfigError, stage_template
from selftrain.mm.configs.models import seg_model
from selftrain.mm.configs.pipelines import seg_test_pipeline, seg_train_pipeline
from selftrain.mm.configs.recipes import oversample_times, zoph_batch_size
from selftrain.mm.configs.training import branch_packing, fill_test, fill_training, fill_zoph_student


def seg_train_config(
    model_cfg: Config,
    *,
    work_dir: str,
    labeled: SegSource,
    val: SegSource | None,
    iters: int,
    k: int,
    seed: int,
    aug: str = "s1",
    pretrained: bool = True,
    load_from: str | None = None,
    pseudo: SegSource | None = None,
    num_pseudo: int = 0,
    num_workers: int = 2,
    num_labeled: int | None = None,
    method: str = "st",
    alpha: float = 1.0,
    zoph_batch: str = "double",
    normalize_loss: bool = True,
    strong_aug: str = STRONG,
) -> Config:
    """Training config for a segmentation teacher (pseudo=None) or a student.

    ``st`` (ST / ST++): labeled pairs repeated beside the pseudo masks, weak augmentation on
    all, strong augmentation on the pseudo masks' images only (docs/design.md §3.4, §3.5):
    ``strong_aug`` names it (model_configs/aug/<strong_aug>.py; 'none': weak only).
    ``zoph`` (Zoph et al. §4.2): as for detection - half human / half pseudo batches
    (``zoph_batch`` 'double': B + B, 'split': B/2 + B/2), the ``aug`` preset on both,
    LossNormalizedSegmentor with weight ``alpha``, usually initialised from the teacher."""
    model = seg_model(model_cfg, len(labeled.classes), pretrained and load_from is None)
    batch = int(model_cfg.batch_size)
    if pseudo is None:
        cfg = stage_template("seg_teacher")
        fill_pairs(cfg["train_dataloader"]["dataset"], labeled, seg_train_pipeline(model_cfg, aug))
    elif method == "zoph":
        batch = zoph_batch_size(batch, zoph_batch)
        # mmdet's MultiBranch packs each source into its branch; the scope prefix finds it from mmseg's registry
        pack = {name: branch_packing("PackSegInputs", name, scope="mmdet.") for name in ("human", "pseudo")}
        cfg = stage_template("seg_student_zoph")
        human_set, pseudo_set = cfg["train_dataloader"]["dataset"]["datasets"]
        fill_pairs(human_set, labeled, seg_train_pipeline(model_cfg, aug, pack=pack["human"]))
        fill_pairs(pseudo_set, pseudo, seg_train_pipeline(model_cfg, aug, pack=pack["pseudo"]))
        model = fill_zoph_student(cfg, model, alpha, batch, normalize_loss)
    elif method != "st":
        raise ConfigError(f"unknown student method {method!r}; use 'zoph' or 'st'")
    else:
        if num_labeled is None:
            num_labeled = count_images(labeled)
        cfg = stage_template("seg_student_st")
        repeat, pseudo_set = cfg["train_dataloader"]["dataset"]["datasets"]
        repeat["times"] = oversample_times(num_labeled, num_pseudo)
        fill_pairs(repeat["dataset"], labeled, seg_train_pipeline(model_cfg, WEAK))
        fill_pairs(pseudo_set, pseudo, seg_train_pipeline(model_cfg, WEAK, strong=strong_aug))
    if val:
        fill_pairs(cfg["val_dataloader"]["dataset"], val, seg_test_pipeline(model_cfg))
    return fill_training(
        cfg,
        model_cfg,
        work_dir=work_dir,
        model=model,
        has_val=val is not None,
        iters=iters,
        k=k,
        seed=seed,
        load_from=load_from,
        num_workers=num_workers,
        batch_size=batch,
    )


def seg_test_config(model_cfg: Config, *, work_dir: str, test: SegSource) -> Config:
    """Runner.test() config (model_configs/stages/seg_test.py): mIoU (mmseg IoUMetric) on a
    held-out set."""
    cfg = stage_template("seg_test")
    fill_pairs(cfg["test_dataloader"]["dataset"], test, seg_test_pipeline(model_cfg))
    return fill_test(cfg, seg_model(model_cfg, len(test.classes), pretrained=False), work_dir)


def seg_tta_model(model_cfg: Config, num_classes: int, confidence_threshold: float) -> dict:
    return dict(
        type="ConfidentSegTTAModel",
        module=seg_model(model_cfg, num_classes, pretrained=False),
        confidence_threshold=confidence_threshold,
    )
