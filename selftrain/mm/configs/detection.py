"""Detection stage configs (mmdet): teacher, Zoph et al. / ST students, test, TTA model."""

from __future__ import annotations

from mmengine.config import Config

from selftrain.mm.configs.datasets import CocoSource, count_images, fill_coco
from selftrain.mm.configs.files import STRONG, WEAK, ConfigError, stage_template, tta_defaults
from selftrain.mm.configs.models import build_model
from selftrain.mm.configs.pipelines import det_test_pipeline, det_train_pipeline
from selftrain.mm.configs.recipes import oversample_times, zoph_batch_size
from selftrain.mm.configs.training import branch_packing, fill_test, fill_training, fill_zoph_student


def _fill_det_val(cfg: dict, model_cfg: Config, val: CocoSource) -> None:
    fill_coco(cfg["val_dataloader"]["dataset"], val, det_test_pipeline(model_cfg))
    cfg["val_evaluator"]["ann_file"] = val.ann_file


def det_train_config(
    model_cfg: Config,
    *,
    work_dir: str,
    labeled: CocoSource,
    val: CocoSource | None,
    iters: int,
    k: int,
    seed: int,
    aug: str = "s1",
    pretrained: bool = True,
    load_from: str | None = None,
    pseudo: CocoSource | None = None,
    method: str = "zoph",
    alpha: float = 1.0,
    num_pseudo: int = 0,
    num_workers: int = 2,
    num_labeled: int | None = None,
    zoph_batch: str = "double",
    normalize_loss: bool = True,
    strong_aug: str = STRONG,
) -> Config:
    """Training config for a teacher (pseudo=None) or a student on labeled + pseudo boxes.

    ``zoph`` (Zoph et al.): half human-labeled, half pseudo-labeled images in every batch
    (mmdet's MultiSourceSampler, source_ratio [1, 1], over a ConcatDataset), trained by
    LossNormalizedDetector (selftrain/mm/loss_normalization.py), usually from the teacher.
    ``zoph_batch`` 'double' (the paper, §3.2: 256 human + 256 pseudo images where supervised
    training uses 256): the model config's batch B of human images plus B pseudo-labeled ones;
    'split': B in all, B/2 of each (half the compute; B must be even).
    ``st`` (ST / ST++ phases): the labeled set repeated to about the pseudo set's size
    (``num_pseudo`` images), shuffled together with it; weak augmentation on all, strong
    augmentation ``strong_aug`` (model_configs/aug/<strong_aug>.py, default strong.py; 'none':
    weak only) on pseudo images only; plain detector.
    """
    batch = int(model_cfg.batch_size)
    model = build_model(model_cfg, pretrained and load_from is None, num_classes=len(labeled.classes))

    if pseudo is None:
        cfg = stage_template("det_teacher")
        fill_coco(cfg["train_dataloader"]["dataset"], labeled, det_train_pipeline(model_cfg, aug))
    elif method == "st":
        if num_labeled is None:
            num_labeled = count_images(labeled)
        cfg = stage_template("det_student_st")
        repeat, pseudo_set = cfg["train_dataloader"]["dataset"]["datasets"]
        repeat["times"] = oversample_times(num_labeled, num_pseudo)
        fill_coco(repeat["dataset"], labeled, det_train_pipeline(model_cfg, WEAK))
        fill_coco(pseudo_set, pseudo, det_train_pipeline(model_cfg, WEAK, strong=strong_aug))
    elif method == "zoph":
        batch = zoph_batch_size(batch, zoph_batch)
        cfg = stage_template("det_student_zoph")
        human_set, pseudo_set = cfg["train_dataloader"]["dataset"]["datasets"]
        fill_coco(human_set, labeled, det_train_pipeline(model_cfg, aug, pack=branch_packing("PackDetInputs", "human")))
        fill_coco(
            pseudo_set, pseudo, det_train_pipeline(model_cfg, aug, pack=branch_packing("PackDetInputs", "pseudo"))
        )
        model = fill_zoph_student(cfg, model, alpha, batch, normalize_loss)
    else:
        raise ConfigError(f"unknown student method {method!r}; use 'zoph' or 'st'")
    if val:
        _fill_det_val(cfg, model_cfg, val)
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


def det_test_config(model_cfg: Config, *, work_dir: str, test: CocoSource) -> Config:
    """Runner.test() config (model_configs/stages/det_test.py): COCO bbox metrics (mmdet
    CocoMetric / pycocotools) on a held-out set."""
    cfg = stage_template("det_test")
    fill_coco(cfg["test_dataloader"]["dataset"], test, det_test_pipeline(model_cfg))
    cfg["test_evaluator"]["ann_file"] = test.ann_file
    return fill_test(cfg, build_model(model_cfg, pretrained=False, num_classes=len(test.classes)), work_dir)


def det_tta_model(
    model_cfg: Config, merge_iou: float | None = None, max_per_img: int | None = None, num_classes: int | None = None
) -> dict:
    """mmdet's DetTTAModel around the detector (heads sized for ``num_classes``); merge
    settings default to model_configs/tta/det_default.py."""
    defaults = tta_defaults("det_default.py")
    merge_iou = defaults.merge_nms_iou if merge_iou is None else merge_iou
    max_per_img = defaults.max_per_img if max_per_img is None else max_per_img
    return dict(
        type="DetTTAModel",
        module=build_model(model_cfg, pretrained=False, num_classes=num_classes),
        tta_cfg=dict(nms=dict(type="nms", iou_threshold=merge_iou), max_per_img=max_per_img),
    )
