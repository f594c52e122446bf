"""The one config builder: OpenMMLab configs for every stage, from model_configs/.

A model config (model_configs/det/*.py) holds the model, its input size, batch size and
optimiser. This module adds what a stage needs - datasets, pipelines with the augmentation
preset (model_configs/aug/), schedule, K evenly spaced checkpoints, TTA (model_configs/tta/)
- and returns plain mmengine ``Config`` objects that mmengine's Runner and mmdet's models
consume. Nothing here trains or infers.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass

from mmengine.config import Config, ConfigDict

from storage.keys import digest_json

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL_CONFIGS = os.path.join(REPO, "model_configs")
CUSTOM_IMPORTS = dict(imports=["selftrain.mm"], allow_failed_imports=False)
AUG_PRESETS = ("s1", "s2", "s3", "s4")
WEAK = "weak"  # ST / ST++ weak augmentation, model_configs/aug/weak.py


class ConfigError(ValueError):
    pass


def resolve_config_path(name: str, kind: str = "det") -> str:
    """'det/retinanet_mnv2_256_cpu', 'retinanet_mnv2_256_cpu' or a path to a .py config."""
    candidates = (
        [name]
        if os.path.isabs(name)
        else [name, os.path.join(MODEL_CONFIGS, name), os.path.join(MODEL_CONFIGS, kind, name)]
    )
    for c in candidates:
        for path in (c, f"{c}.py"):
            if os.path.isfile(path):
                return os.path.abspath(path)
    folder = os.path.join(MODEL_CONFIGS, kind)
    available = sorted(f[:-3] for f in os.listdir(folder) if f.endswith(".py")) if os.path.isdir(folder) else []
    raise ConfigError(f"model config {name!r} not found; available {kind} configs: {available}")


def load_config(name: str, kind: str = "det") -> Config:
    path = resolve_config_path(name, kind)
    try:
        return Config.fromfile(path)
    except Exception as exc:  # noqa: BLE001 - a broken config file gets its name in the error
        raise ConfigError(f"cannot load model config {path}: {type(exc).__name__}: {exc}") from exc


def config_digest(cfg: Config | dict) -> str:
    """Digest of a resolved config (its content, not its file name or location)."""
    data = cfg.to_dict() if isinstance(cfg, Config) else cfg
    return digest_json(json.loads(json.dumps(data, default=repr, sort_keys=True)))


@dataclass(frozen=True)
class CocoSource:
    """A COCO-format detection set on local disk: annotations and the image root."""

    ann_file: str
    image_root: str
    classes: tuple[str, ...]


def _load_image(skip_unreadable: bool = False) -> dict:
    if skip_unreadable:
        return dict(type="LoadImageOrMarkUnreadable")
    return dict(type="LoadImageFromFile")


def aug_preset(name: str) -> Config:
    key = name.lower()
    if key not in AUG_PRESETS + (WEAK,):
        raise ConfigError(f"unknown augmentation preset {name!r}; use one of {[p.upper() for p in AUG_PRESETS]}")
    return Config.fromfile(os.path.join(MODEL_CONFIGS, "aug", f"{key}.py"))


def strong_transforms(task: str) -> list[dict]:
    """ST / ST++ strong augmentation for 'det' or 'seg' (model_configs/aug/strong.py)."""
    strong = Config.fromfile(os.path.join(MODEL_CONFIGS, "aug", "strong.py"))
    return copy.deepcopy(list(strong[task]))


def det_train_pipeline(model_cfg: Config, aug: str, pack: dict | None = None, strong: bool = False) -> list[dict]:
    """Load -> preset policy (AutoAugment / RandAugment) -> scale jitter -> crop -> flip
    [-> ST strong augmentation] -> pack."""
    preset = aug_preset(aug)
    w, h = model_cfg.img_scale
    return [
        _load_image(),
        dict(type="LoadAnnotations", with_bbox=True),
        *copy.deepcopy(list(preset.policy)),
        dict(type="RandomResize", scale=(w, h), ratio_range=tuple(preset.scale_jitter), keep_ratio=True),
        dict(type="RandomCrop", crop_size=(h, w), allow_negative_crop=False),
        dict(type="FilterAnnotations", min_gt_bbox_wh=(1, 1), keep_empty=False),
        dict(type="RandomFlip", prob=float(preset.flip_prob)),
        *(strong_transforms("det") if strong else []),
        pack or dict(type="PackDetInputs"),
    ]


def det_test_pipeline(model_cfg: Config, with_ann: bool = True, skip_unreadable: bool = False) -> list[dict]:
    w, h = model_cfg.img_scale
    steps = [_load_image(skip_unreadable), dict(type="Resize", scale=(w, h), keep_ratio=True)]
    if with_ann:
        steps.append(dict(type="LoadAnnotations", with_bbox=True))
    steps.append(
        dict(
            type="PackDetInputs",
            meta_keys=("img_id", "img_path", "ori_shape", "img_shape", "scale_factor", "load_error"),
        )
    )
    return steps


def coco_dataset(source: CocoSource, pipeline: list[dict], test_mode: bool) -> dict:
    return dict(
        type="CocoDataset",
        data_root="",
        ann_file=source.ann_file,
        data_prefix=dict(img=source.image_root.rstrip("/") + "/"),
        metainfo=dict(classes=tuple(source.classes)),
        filter_cfg=None if test_mode else dict(filter_empty_gt=True, min_size=1),
        pipeline=pipeline,
        test_mode=test_mode,
        backend_args=None,
    )


def set_num_classes(model: dict, num_classes: int) -> dict:
    """Size every head of a model dict for ``num_classes`` classes (in place; returns it).

    Every ``num_classes`` key of the model's heads is set (RetinaNet's bbox_head, a two-stage
    detector's roi_head.bbox_head / mask_head, a segmentor's decode_head / auxiliary_head),
    except the class-agnostic region proposal head (``rpn_head``), which stays as configured.
    Raises ConfigError when the model has no ``num_classes`` to set.
    """
    if num_classes < 1:
        raise ConfigError(f"a model needs at least one class, got {num_classes}")
    found = []

    def walk(node, path):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "rpn_head":
                    continue
                if key == "num_classes" and isinstance(value, int):
                    node[key] = num_classes
                    found.append(path)
                else:
                    walk(value, f"{path}.{key}")
        elif isinstance(node, (list, tuple)):
            for i, value in enumerate(node):
                walk(value, f"{path}[{i}]")

    walk(model, "model")
    if not found:
        raise ConfigError(
            f"the model ({model.get('type')}) has no head with num_classes to size for {num_classes} classes"
        )
    return model


def _model(model_cfg: Config, pretrained: bool, scope: str = "mmdet", num_classes: int | None = None) -> dict:
    """The model dict of a model config, sized for ``num_classes`` (None: as configured).

    ``pretrained=False`` removes every pretrained initialisation (the backbone's ``init_cfg``
    and a segmentor's model-level ``pretrained`` URL): the random-initialisation control."""
    model = copy.deepcopy(model_cfg.model.to_dict() if isinstance(model_cfg.model, ConfigDict) else model_cfg.model)
    name = model_cfg.get("pretrained_backbone")
    if pretrained and name:
        from selftrain.mm.pretrained import PRETRAINED

        if name not in PRETRAINED:
            raise ConfigError(f"unknown pretrained backbone {name!r}; known: {sorted(PRETRAINED)}")
        model["backbone"]["init_cfg"] = dict(type="Pretrained", checkpoint=PRETRAINED[name](scope))
    elif not pretrained:
        # Random initialisation, the paper's other control: no backbone init_cfg and no
        # model-level `pretrained` (mmseg's EncoderDecoder turns it into the backbone's init_cfg).
        model["backbone"].pop("init_cfg", None)
        model.pop("pretrained", None)
    if num_classes is not None:
        set_num_classes(model, num_classes)
    return model


def det_model(model_cfg: Config, pretrained: bool = False, num_classes: int | None = None) -> dict:
    """The detector of a model config, heads sized for ``num_classes`` (for inference: no
    pretrained download)."""
    return _model(model_cfg, pretrained, num_classes=num_classes)


def _val_parts(model_cfg: Config, val: CocoSource) -> dict:
    return dict(
        val_dataloader=dict(
            batch_size=1,
            num_workers=0,
            persistent_workers=False,
            drop_last=False,
            sampler=dict(type="DefaultSampler", shuffle=False),
            dataset=coco_dataset(val, det_test_pipeline(model_cfg), test_mode=True),
        ),
        val_evaluator=dict(
            type="CocoMetric", ann_file=val.ann_file, metric="bbox", format_only=False, backend_args=None
        ),
        val_cfg=dict(type="ValLoop"),
    )


def oversample_times(num_labeled: int, num_pseudo: int) -> int:
    """ST: the labeled set is repeated to about the pseudo set's size (docs/design.md §3.4, §3.5)."""
    if num_labeled <= 0:
        raise ConfigError("the labeled set is empty")
    return max(1, round(num_pseudo / num_labeled))


def _train_config(
    scope: str,
    model_cfg: Config,
    *,
    work_dir: str,
    model: dict,
    train_dataset: dict,
    sampler: dict,
    val_parts: dict | None,
    best_metric: str,
    iters: int,
    k: int,
    seed: int,
    load_from: str | None,
    num_workers: int,
    visualizer: str,
) -> Config:
    """The schedule, hooks and runtime shared by every training: K evenly spaced checkpoints
    (CheckpointHook(interval=iters/K) keeps iter_{j*iters/K}.pth, docs/design.md §2.3), the best one by
    validation ``best_metric``, warm-up then cosine decay, seeded."""
    if iters <= 0 or k <= 0 or iters % k:
        raise ConfigError(
            f"iters ({iters}) must be a positive multiple of k ({k}) so the K checkpoints are evenly spaced"
        )
    interval = iters // k
    warmup = min(int(model_cfg.get("warmup_iters", 0)), iters // 2)
    hooks = dict(
        timer=dict(type="IterTimerHook"),
        logger=dict(type="LoggerHook", interval=max(1, min(50, interval // 2))),
        param_scheduler=dict(type="ParamSchedulerHook"),
        checkpoint=dict(
            type="CheckpointHook",
            interval=interval,
            by_epoch=False,
            max_keep_ckpts=-1,
            save_last=True,
            **(dict(save_best=best_metric, rule="greater") if val_parts else {}),
        ),
        sampler_seed=dict(type="DistSamplerSeedHook"),
    )
    if scope == "mmdet":
        hooks["visualization"] = dict(type="DetVisualizationHook", draw=False)
    schedulers = [dict(type="CosineAnnealingLR", by_epoch=False, begin=warmup, end=iters, eta_min_ratio=0.05)]
    if warmup:
        schedulers.insert(0, dict(type="LinearLR", start_factor=0.01, by_epoch=False, begin=0, end=warmup))
    cfg = dict(
        default_scope=scope,
        custom_imports=CUSTOM_IMPORTS,
        work_dir=work_dir,
        model=model,
        train_dataloader=dict(
            batch_size=int(model_cfg.batch_size),
            num_workers=num_workers,
            persistent_workers=num_workers > 0,
            sampler=sampler,
            dataset=train_dataset,
        ),
        train_cfg=dict(type="IterBasedTrainLoop", max_iters=iters, val_interval=interval if val_parts else iters + 1),
        optim_wrapper=copy.deepcopy(model_cfg.optim_wrapper.to_dict()),
        param_scheduler=schedulers,
        default_hooks=hooks,
        env_cfg=dict(
            cudnn_benchmark=False,
            mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
            dist_cfg=dict(backend="nccl"),
        ),
        log_processor=dict(type="LogProcessor", window_size=20, by_epoch=False),
        log_level="INFO",
        load_from=load_from,
        resume=False,
        randomness=dict(seed=seed, deterministic=False),
        visualizer=dict(type=visualizer, vis_backends=[dict(type="LocalVisBackend")], name="visualizer"),
    )
    if val_parts:
        cfg.update(val_parts)
    return Config(cfg)


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
) -> Config:
    """Training config for a teacher (pseudo=None) or a student on labeled + pseudo boxes.

    ``zoph`` (Zoph et al.): half human-labeled, half pseudo-labeled images in every batch
    (mmdet's MultiSourceSampler, source_ratio [1, 1], over a ConcatDataset), trained by
    LossNormalizedDetector (selftrain/mm/loss_normalization.py), usually from the teacher.
    ``st`` (ST / ST++ phases): the labeled set repeated to about the pseudo set's size
    (``num_pseudo`` images), shuffled together with it; weak augmentation on all, strong
    augmentation (model_configs/aug/strong.py) on pseudo images only; plain detector.
    """
    batch = int(model_cfg.batch_size)
    model = _model(model_cfg, pretrained and load_from is None, num_classes=len(labeled.classes))

    if pseudo is None:
        train_dataset = coco_dataset(labeled, det_train_pipeline(model_cfg, aug), test_mode=False)
        sampler = dict(type="InfiniteSampler", shuffle=True)
    elif method == "st":
        with open(labeled.ann_file) as f:
            num_labeled = len(json.load(f)["images"])
        train_dataset = dict(
            type="ConcatDataset",
            datasets=[
                dict(
                    type="RepeatDataset",
                    times=oversample_times(num_labeled, num_pseudo),
                    dataset=coco_dataset(labeled, det_train_pipeline(model_cfg, WEAK), test_mode=False),
                ),
                coco_dataset(pseudo, det_train_pipeline(model_cfg, WEAK, strong=True), test_mode=False),
            ],
        )
        sampler = dict(type="InfiniteSampler", shuffle=True)
    elif method == "zoph":
        branches = ["human", "pseudo"]

        def branch(name: str) -> dict:
            return dict(type="MultiBranch", branch_field=branches, **{name: dict(type="PackDetInputs")})

        train_dataset = dict(
            type="ConcatDataset",
            datasets=[
                coco_dataset(labeled, det_train_pipeline(model_cfg, aug, pack=branch("human")), test_mode=False),
                coco_dataset(pseudo, det_train_pipeline(model_cfg, aug, pack=branch("pseudo")), test_mode=False),
            ],
        )
        if batch % 2:
            raise ConfigError(f"the student's batch size ({batch}) must be even: half human, half pseudo")
        sampler = dict(type="MultiSourceSampler", batch_size=batch, source_ratio=[1, 1], shuffle=True)
        model = dict(
            type="LossNormalizedDetector",
            detector=model,
            alpha=alpha,
            data_preprocessor=dict(
                type="DropEmptyBranchesDataPreprocessor", data_preprocessor=model["data_preprocessor"]
            ),
        )
    else:
        raise ConfigError(f"unknown student method {method!r}; use 'zoph' or 'st'")
    return _train_config(
        "mmdet",
        model_cfg,
        work_dir=work_dir,
        model=model,
        train_dataset=train_dataset,
        sampler=sampler,
        val_parts=_val_parts(model_cfg, val) if val else None,
        best_metric="coco/bbox_mAP",
        iters=iters,
        k=k,
        seed=seed,
        load_from=load_from,
        num_workers=num_workers,
        visualizer="DetLocalVisualizer",
    )


def _test_config(scope: str, model: dict, *, work_dir: str, parts: dict, visualizer: str) -> Config:
    return Config(
        dict(
            default_scope=scope,
            custom_imports=CUSTOM_IMPORTS,
            work_dir=work_dir,
            model=model,
            test_dataloader=parts["val_dataloader"],
            test_evaluator=parts["val_evaluator"],
            test_cfg=dict(type="TestLoop"),
            default_hooks=dict(timer=dict(type="IterTimerHook"), logger=dict(type="LoggerHook", interval=50)),
            env_cfg=dict(cudnn_benchmark=False, dist_cfg=dict(backend="nccl")),
            log_level="WARNING",
            visualizer=dict(type=visualizer, vis_backends=[dict(type="LocalVisBackend")], name="visualizer"),
        )
    )


def det_test_config(model_cfg: Config, *, work_dir: str, test: CocoSource) -> Config:
    """Runner.test() config: COCO bbox metrics (mmdet CocoMetric / pycocotools) on a held-out set."""
    return _test_config(
        "mmdet",
        _model(model_cfg, pretrained=False, num_classes=len(test.classes)),
        work_dir=work_dir,
        parts=_val_parts(model_cfg, test),
        visualizer="DetLocalVisualizer",
    )


# ---------------------------------------------------------------- segmentation (mmseg)


@dataclass(frozen=True)
class SegSource:
    """A segmentation set on local disk: a JSON list of {img_path, seg_map_path} (see
    selftrain.mm.segmentation.PairListSegDataset) and its classes (index = label value)."""

    pairs_file: str
    classes: tuple[str, ...]


def seg_model(model_cfg: Config, num_classes: int, pretrained: bool) -> dict:
    """The segmentor with ``num_classes`` outputs in every head, optionally ImageNet-initialised."""
    return _model(model_cfg, pretrained, scope="mmseg", num_classes=num_classes)


def seg_dataset(source: SegSource, pipeline: list[dict], test_mode: bool = False) -> dict:
    return dict(
        type="PairListSegDataset",
        ann_file=source.pairs_file,
        data_root="",
        data_prefix=dict(),
        metainfo=dict(classes=tuple(source.classes)),
        reduce_zero_label=False,
        pipeline=pipeline,
        test_mode=test_mode,
        lazy_init=False,
    )


def seg_train_pipeline(model_cfg: Config, aug: str, strong: bool = False) -> list[dict]:
    """Load -> resize with the preset's ratio jitter -> crop -> flip [-> ST strong] -> pack.
    The detection presets' AutoAugment / RandAugment policies are box-aware mmdet transforms:
    segmentation takes the presets' jitter and flip only and refuses a policy."""
    preset = aug_preset(aug)
    if list(preset.policy):
        raise ConfigError(
            f"augmentation preset {aug!r} has a detection policy (AutoAugment / RandAugment); "
            "segmentation supports S1 (flip + scale jitter)"
        )
    h, w = model_cfg.crop_size
    return [
        dict(type="LoadImageFromFile"),
        dict(type="LoadAnnotations"),
        dict(type="RandomResize", scale=(w, h), ratio_range=tuple(preset.scale_jitter), keep_ratio=True),
        dict(type="RandomCrop", crop_size=(h, w), cat_max_ratio=0.75),
        dict(type="RandomFlip", prob=float(preset.flip_prob)),
        *(strong_transforms("seg") if strong else []),
        dict(type="PackSegInputs"),
    ]


def seg_test_pipeline(model_cfg: Config, with_ann: bool = True, skip_unreadable: bool = False) -> list[dict]:
    w, h = model_cfg.img_scale
    steps = [_load_image(skip_unreadable), dict(type="Resize", scale=(w, h), keep_ratio=True)]
    if with_ann:
        steps.append(dict(type="LoadAnnotations"))
    steps.append(dict(type="PackSegInputs", meta_keys=SEG_META_KEYS))
    return steps


SEG_META_KEYS = (
    "img_path",
    "seg_map_path",
    "ori_shape",
    "img_shape",
    "pad_shape",
    "scale_factor",
    "flip",
    "flip_direction",
    "reduce_zero_label",
    "load_error",
    "img_id",
)


def _seg_val_parts(model_cfg: Config, val: SegSource) -> dict:
    return dict(
        val_dataloader=dict(
            batch_size=1,
            num_workers=0,
            persistent_workers=False,
            drop_last=False,
            sampler=dict(type="DefaultSampler", shuffle=False),
            dataset=seg_dataset(val, seg_test_pipeline(model_cfg), test_mode=True),
        ),
        val_evaluator=dict(type="IoUMetric", iou_metrics=["mIoU"]),
        val_cfg=dict(type="ValLoop"),
    )


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
) -> Config:
    """Training config for a segmentation teacher (pseudo=None) or an ST / ST++ student:
    labeled pairs repeated to about the pseudo set's size, weak augmentation on all, strong
    augmentation on the pseudo masks' images only (docs/design.md §3.4, §3.5)."""
    model = seg_model(model_cfg, len(labeled.classes), pretrained and load_from is None)
    if pseudo is None:
        train_dataset = seg_dataset(labeled, seg_train_pipeline(model_cfg, aug))
    else:
        with open(labeled.pairs_file) as f:
            num_labeled = len(json.load(f))
        train_dataset = dict(
            type="ConcatDataset",
            datasets=[
                dict(
                    type="RepeatDataset",
                    times=oversample_times(num_labeled, num_pseudo),
                    dataset=seg_dataset(labeled, seg_train_pipeline(model_cfg, WEAK)),
                ),
                seg_dataset(pseudo, seg_train_pipeline(model_cfg, WEAK, strong=True)),
            ],
        )
    return _train_config(
        "mmseg",
        model_cfg,
        work_dir=work_dir,
        model=model,
        train_dataset=train_dataset,
        sampler=dict(type="InfiniteSampler", shuffle=True),
        val_parts=_seg_val_parts(model_cfg, val) if val else None,
        best_metric="mIoU",
        iters=iters,
        k=k,
        seed=seed,
        load_from=load_from,
        num_workers=num_workers,
        visualizer="SegLocalVisualizer",
    )


def seg_test_config(model_cfg: Config, *, work_dir: str, test: SegSource) -> Config:
    """Runner.test() config: mIoU (mmseg IoUMetric) on a held-out set."""
    return _test_config(
        "mmseg",
        seg_model(model_cfg, len(test.classes), pretrained=False),
        work_dir=work_dir,
        parts=_seg_val_parts(model_cfg, test),
        visualizer="SegLocalVisualizer",
    )


def seg_tta_pipeline(model_cfg: Config, scales: list[float], flip: bool) -> list[dict]:
    """Multi-scale x flip views for ConfidentSegTTAModel; scales relative to the test size."""
    if not scales or any(s <= 0 for s in scales):
        raise ConfigError(f"TTA scales must be positive numbers, got {scales}")
    w, h = model_cfg.img_scale
    flips = [dict(type="RandomFlip", prob=0.0, direction="horizontal")]
    if flip:
        flips.append(dict(type="RandomFlip", prob=1.0, direction="horizontal"))
    return [
        _load_image(skip_unreadable=True),
        dict(
            type="TestTimeAug",
            transforms=[
                [dict(type="Resize", scale=(round(w * s), round(h * s)), keep_ratio=True) for s in scales],
                flips,
                [dict(type="PackSegInputs", meta_keys=SEG_META_KEYS)],
            ],
        ),
    ]


def seg_tta_model(model_cfg: Config, num_classes: int, confidence_threshold: float) -> dict:
    return dict(
        type="ConfidentSegTTAModel",
        module=seg_model(model_cfg, num_classes, pretrained=False),
        confidence_threshold=confidence_threshold,
    )


def det_tta_pipeline(model_cfg: Config, scales: list[float], flip: bool) -> list[dict]:
    """Multi-scale x flip views of each image for mmdet's DetTTAModel (docs/design.md §3.2)."""
    if not scales or any(s <= 0 for s in scales):
        raise ConfigError(f"TTA scales must be positive numbers, got {scales}")
    w, h = model_cfg.img_scale
    flips = (
        [dict(type="RandomFlip", prob=1.0), dict(type="RandomFlip", prob=0.0)]
        if flip
        else [dict(type="RandomFlip", prob=0.0)]
    )
    return [
        _load_image(skip_unreadable=True),
        dict(
            type="TestTimeAug",
            transforms=[
                [dict(type="Resize", scale=(round(w * s), round(h * s)), keep_ratio=True) for s in scales],
                flips,
                [
                    dict(
                        type="PackDetInputs",
                        meta_keys=(
                            "img_id",
                            "img_path",
                            "ori_shape",
                            "img_shape",
                            "scale_factor",
                            "flip",
                            "flip_direction",
                            "load_error",
                        ),
                    )
                ],
            ],
        ),
    ]


def tta_defaults(name: str) -> Config:
    """A TTA defaults file of model_configs/tta/ (views and merge settings)."""
    return Config.fromfile(os.path.join(MODEL_CONFIGS, "tta", name))


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
        module=_model(model_cfg, pretrained=False, num_classes=num_classes),
        tta_cfg=dict(nms=dict(type="nms", iou_threshold=merge_iou), max_per_img=max_per_img),
    )
