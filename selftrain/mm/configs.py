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
import math
import os
from dataclasses import dataclass

from mmengine.config import Config, ConfigDict

from storage.keys import digest_json

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL_CONFIGS = os.path.join(REPO, "model_configs")
STAGE_CONFIGS = os.path.join(MODEL_CONFIGS, "stages")  # one file per stage: what a run fills is None there
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


def stage_template(name: str) -> dict:
    """A stage config of model_configs/stages/ (``det_teacher``, ``det_student_zoph``, ...) with
    its ``_base_`` files resolved, as a plain dict; helper variables (names starting with
    ``_``) dropped. Its ``None`` values are what a run fills. Raises ConfigError for an
    unknown name, listing the stage configs."""
    path = os.path.join(STAGE_CONFIGS, f"{name}.py")
    if not os.path.isfile(path):
        raise ConfigError(f"no stage config {name!r}; stage configs: {stage_names()}")
    cfg = Config.fromfile(path).to_dict()
    return {key: value for key, value in cfg.items() if not key.startswith("_")}


def stage_names() -> list[str]:
    return sorted(f[:-3] for f in os.listdir(STAGE_CONFIGS) if f.endswith(".py"))


def _fill_coco(dataset: dict, source: CocoSource, pipeline: list[dict]) -> dict:
    """Fill a CocoDataset of a stage template with a local set and its pipeline (in place).

    An empty ``image_root`` (a pseudo set, whose file names are the images' full URIs) gives
    an empty prefix: mmdet joins prefix and file name, and "/" + "s3://b/x.jpg" is no URL."""
    dataset.update(ann_file=source.ann_file, pipeline=pipeline)
    dataset["data_prefix"]["img"] = source.image_root.rstrip("/") + "/" if source.image_root else ""
    dataset["metainfo"]["classes"] = tuple(source.classes)
    return dataset


def coco_dataset(source: CocoSource, pipeline: list[dict], test_mode: bool) -> dict:
    """A CocoDataset dict (model_configs/_base_/datasets/coco_detection.py) for ``source``."""
    part = stage_template("det_teacher")["val_dataloader" if test_mode else "train_dataloader"]
    return _fill_coco(part["dataset"], source, pipeline)


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


def _fill_det_val(cfg: dict, model_cfg: Config, val: CocoSource) -> None:
    _fill_coco(cfg["val_dataloader"]["dataset"], val, det_test_pipeline(model_cfg))
    cfg["val_evaluator"]["ann_file"] = val.ann_file


def oversample_times(num_labeled: int, num_pseudo: int) -> int:
    """ST: the labeled set is repeated ceil(P / L) times beside the P pseudo-labeled images, as
    the ST++ reference code does (dataset/semi.py: ``labeled_ids * math.ceil(len(unlabeled_ids)
    / len(labeled_ids))``; docs/design.md §3.5). At least once. Raises ConfigError for L = 0."""
    if num_labeled <= 0:
        raise ConfigError("the labeled set is empty")
    return max(1, math.ceil(num_pseudo / num_labeled))


def epoch_matched_iters(teacher_iters: int, num_labeled: int, num_pseudo: int, k: int) -> int:
    """An ST / ST++ student's iterations: as many epochs over its own training set as the
    teacher trained over the labeled set, at the same batch size (the ST++ reference code
    trains every stage for the same ``--epochs``, main.py).

    The teacher's epochs are ``teacher_iters * B / L_t``, where ``L_t`` is the teacher's set:
    the L labeled images, doubled when L < 200 as the reference does (main.py:
    ``trainset.ids = 2 * trainset.ids if len(trainset.ids) < 200``); the student's set holds
    ``ceil(P / L) * L + P`` images (:func:`oversample_times`), so its iterations are
    ``teacher_iters * (ceil(P / L) * L + P) / L_t``, rounded up to a multiple of ``k`` (the K
    checkpoints stay evenly spaced). E.g. 300 teacher iterations, 16 labeled, 96 pseudo:
    300 * (6 * 16 + 96) / 32 = 1800. Raises ConfigError for an empty labeled set or
    non-positive iterations / k."""
    if teacher_iters <= 0 or k <= 0:
        raise ConfigError(f"teacher_iters ({teacher_iters}) and k ({k}) must be positive")
    size = oversample_times(num_labeled, num_pseudo) * num_labeled + num_pseudo
    return math.ceil(teacher_iters * size / teacher_set_size(num_labeled) / k) * k


def teacher_set_size(num_labeled: int) -> int:
    """The images of a teacher's epoch: the labeled set, twice when it has fewer than 200
    images (the ST++ reference's rule, main.py)."""
    return 2 * num_labeled if num_labeled < 200 else num_labeled


def count_images(source: CocoSource | SegSource) -> int:
    """Images of a local set: a COCO file's images, or a pair list's entries."""
    path = source.ann_file if isinstance(source, CocoSource) else source.pairs_file
    with open(path) as f:
        data = json.load(f)
    return len(data["images"] if isinstance(source, CocoSource) else data)


def zoph_batch_size(batch: int, zoph_batch: str) -> int:
    """A Zoph et al. student's batch from the model config's B: 'double' (the paper, §3.2: B human
    + B pseudo images) or 'split' (B/2 + B/2; B must be even). Raises ConfigError otherwise."""
    if zoph_batch not in ("double", "split"):
        raise ConfigError(f"zoph_batch must be 'double' or 'split', got {zoph_batch!r}")
    if zoph_batch == "split" and batch % 2:
        raise ConfigError(f"the student's batch size ({batch}) must be even: half human, half pseudo")
    return 2 * batch if zoph_batch == "double" else batch


def _branch(pack: str, name: str, scope: str = "") -> dict:
    """mmdet's MultiBranch packing one source's samples into branch ``name`` (human / pseudo)."""
    return dict(type=f"{scope}MultiBranch", branch_field=["human", "pseudo"], **{name: dict(type=pack)})


def _fill_zoph_student(cfg: dict, model: dict, alpha: float, batch: int, normalize_loss: bool = True) -> dict:
    """Fill a zoph stage template's sampler and loss-normalised wrapper around ``model``; the
    wrapped model (in place, and returned). ``normalize_loss=False``: the plain weighted loss
    ``Lh + alpha * Lp`` (an ablation, not the paper's recipe)."""
    cfg["train_dataloader"]["sampler"]["batch_size"] = batch
    cfg["model"].update(detector=model, alpha=alpha)
    if not normalize_loss:
        cfg["model"]["normalize"] = False
    cfg["model"]["data_preprocessor"]["data_preprocessor"] = model["data_preprocessor"]
    return cfg["model"]


VAL_KEYS = ("val_dataloader", "val_evaluator", "val_cfg")


def _fill_training(
    cfg: dict,
    model_cfg: Config,
    *,
    work_dir: str,
    model: dict | None,
    has_val: bool,
    iters: int,
    k: int,
    seed: int,
    load_from: str | None,
    num_workers: int,
    batch_size: int | None = None,
) -> Config:
    """Fill a training stage template: K evenly spaced checkpoints (CheckpointHook with
    interval iters/K keeps iter_{j*iters/K}.pth, docs/design.md §2.3), the best one by
    validation when there is a held-out set, the warm-up then cosine schedule, the model
    config's batch size and optimiser, the seed. Raises ConfigError unless K divides iters."""
    if iters <= 0 or k <= 0 or iters % k:
        raise ConfigError(
            f"iters ({iters}) must be a positive multiple of k ({k}) so the K checkpoints are evenly spaced"
        )
    interval = iters // k
    warmup = min(int(model_cfg.get("warmup_iters", 0)), iters // 2)
    hooks = cfg["default_hooks"]
    hooks["logger"]["interval"] = max(1, min(50, interval // 2))
    hooks["checkpoint"]["interval"] = interval
    if not has_val:
        for key in ("save_best", "rule"):
            hooks["checkpoint"].pop(key, None)
        for key in VAL_KEYS:
            cfg.pop(key, None)
    linear, cosine = cfg["param_scheduler"]
    linear["end"] = warmup
    cosine.update(begin=warmup, end=iters)
    cfg["param_scheduler"] = [linear, cosine] if warmup else [cosine]
    cfg["train_cfg"].update(max_iters=iters, val_interval=interval if has_val else iters + 1)
    cfg["train_dataloader"].update(
        batch_size=batch_size or int(model_cfg.batch_size), num_workers=num_workers, persistent_workers=num_workers > 0
    )
    cfg["optim_wrapper"] = copy.deepcopy(model_cfg.optim_wrapper.to_dict())
    cfg["randomness"]["seed"] = seed
    cfg.update(work_dir=work_dir, load_from=load_from)
    if model is not None:
        cfg["model"] = model
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
    num_labeled: int | None = None,
    zoph_batch: str = "double",
    normalize_loss: bool = True,
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
    augmentation (model_configs/aug/strong.py) on pseudo images only; plain detector.
    """
    batch = int(model_cfg.batch_size)
    model = _model(model_cfg, pretrained and load_from is None, num_classes=len(labeled.classes))

    if pseudo is None:
        cfg = stage_template("det_teacher")
        _fill_coco(cfg["train_dataloader"]["dataset"], labeled, det_train_pipeline(model_cfg, aug))
    elif method == "st":
        if num_labeled is None:
            num_labeled = count_images(labeled)
        cfg = stage_template("det_student_st")
        repeat, pseudo_set = cfg["train_dataloader"]["dataset"]["datasets"]
        repeat["times"] = oversample_times(num_labeled, num_pseudo)
        _fill_coco(repeat["dataset"], labeled, det_train_pipeline(model_cfg, WEAK))
        _fill_coco(pseudo_set, pseudo, det_train_pipeline(model_cfg, WEAK, strong=True))
    elif method == "zoph":
        batch = zoph_batch_size(batch, zoph_batch)
        cfg = stage_template("det_student_zoph")
        human_set, pseudo_set = cfg["train_dataloader"]["dataset"]["datasets"]
        _fill_coco(human_set, labeled, det_train_pipeline(model_cfg, aug, pack=_branch("PackDetInputs", "human")))
        _fill_coco(pseudo_set, pseudo, det_train_pipeline(model_cfg, aug, pack=_branch("PackDetInputs", "pseudo")))
        model = _fill_zoph_student(cfg, model, alpha, batch, normalize_loss)
    else:
        raise ConfigError(f"unknown student method {method!r}; use 'zoph' or 'st'")
    if val:
        _fill_det_val(cfg, model_cfg, val)
    return _fill_training(
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


TEST_KEYS = (
    "default_scope",
    "custom_imports",
    "work_dir",
    "model",
    "test_dataloader",
    "test_evaluator",
    "test_cfg",
    "default_hooks",
    "env_cfg",
    "log_level",
    "visualizer",
)


def _fill_test(cfg: dict, model: dict, work_dir: str) -> Config:
    """A test stage template filled: the model and work folder; only the test parts kept."""
    cfg.update(model=model, work_dir=work_dir)
    return Config({key: cfg[key] for key in TEST_KEYS})


def det_test_config(model_cfg: Config, *, work_dir: str, test: CocoSource) -> Config:
    """Runner.test() config (model_configs/stages/det_test.py): COCO bbox metrics (mmdet
    CocoMetric / pycocotools) on a held-out set."""
    cfg = stage_template("det_test")
    _fill_coco(cfg["test_dataloader"]["dataset"], test, det_test_pipeline(model_cfg))
    cfg["test_evaluator"]["ann_file"] = test.ann_file
    return _fill_test(cfg, _model(model_cfg, pretrained=False, num_classes=len(test.classes)), work_dir)


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


def _fill_pairs(dataset: dict, source: SegSource, pipeline: list[dict]) -> dict:
    """Fill a PairListSegDataset of a stage template with a local set and its pipeline (in place)."""
    dataset.update(ann_file=source.pairs_file, pipeline=pipeline)
    dataset["metainfo"]["classes"] = tuple(source.classes)
    return dataset


def seg_dataset(source: SegSource, pipeline: list[dict], test_mode: bool = False) -> dict:
    """A PairListSegDataset dict (model_configs/_base_/datasets/pair_list_seg.py) for ``source``."""
    part = stage_template("seg_teacher")["val_dataloader" if test_mode else "train_dataloader"]
    return _fill_pairs(part["dataset"], source, pipeline)


def mmdet_scoped(policy: list[dict]) -> list[dict]:
    """A preset's AutoAugment / RandAugment policy for an mmseg pipeline: every transform named
    with its mmdet scope (``mmdet.Rotate``...), and mmdet's default sub-policies written out so
    that they are scoped too. mmdet's geometric ops move a label map with the image and fill
    what they uncover with 255 (ignored), its colour ops leave the map alone."""
    import inspect

    from mmdet.datasets.transforms.augment_wrappers import AutoAugment, RandAugment

    # mmdet's own defaults (its ImageNet AutoAugment sub-policies; the RandAugment op space)
    defaults = {
        "AutoAugment": ("policies", inspect.signature(AutoAugment.__init__).parameters["policies"].default),
        "RandAugment": ("aug_space", inspect.signature(RandAugment.__init__).parameters["aug_space"].default),
    }

    def scope(t: dict) -> dict:
        t = dict(t)
        if not str(t["type"]).startswith("mmdet."):
            t["type"] = f"mmdet.{t['type']}"
        return t

    out = []
    for t in copy.deepcopy(policy):
        if t["type"] in defaults:
            key, default = defaults[t["type"]]
            t[key] = [[scope(op) for op in sub] for sub in t.get(key, default)]
        out.append(scope(t))
    return out


def seg_train_pipeline(model_cfg: Config, aug: str, strong: bool = False, pack: dict | None = None) -> list[dict]:
    """Load -> [preset policy] -> resize with the preset's ratio jitter -> crop -> flip
    [-> ST strong] -> pack. The S2..S4 policies are mmdet's AutoAugment / RandAugment, scoped
    for mmseg (:func:`mmdet_scoped`), as Zoph et al. use the presets for segmentation too."""
    preset = aug_preset(aug)
    # resize around the model's image scale (as mmseg's own configs: (2048, 512) for VOC aug,
    # (2049, 1025) for Cityscapes; ST++: the base size times 0.5 .. 2.0), then crop
    scale_w, scale_h = model_cfg.img_scale
    h, w = model_cfg.crop_size
    return [
        dict(type="LoadImageFromFile"),
        dict(type="LoadAnnotations"),
        *mmdet_scoped(list(preset.policy)),
        dict(type="RandomResize", scale=(scale_w, scale_h), ratio_range=tuple(preset.scale_jitter), keep_ratio=True),
        dict(type="RandomCrop", crop_size=(h, w), cat_max_ratio=0.75),
        dict(type="RandomFlip", prob=float(preset.flip_prob)),
        *(strong_transforms("seg") if strong else []),
        pack or dict(type="PackSegInputs"),
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
) -> Config:
    """Training config for a segmentation teacher (pseudo=None) or a student.

    ``st`` (ST / ST++): labeled pairs repeated beside the pseudo masks, weak augmentation on
    all, strong augmentation on the pseudo masks' images only (docs/design.md §3.4, §3.5).
    ``zoph`` (Zoph et al. §4.2): as for detection - half human / half pseudo batches
    (``zoph_batch`` 'double': B + B, 'split': B/2 + B/2), the ``aug`` preset on both,
    LossNormalizedSegmentor with weight ``alpha``, usually initialised from the teacher."""
    model = seg_model(model_cfg, len(labeled.classes), pretrained and load_from is None)
    batch = int(model_cfg.batch_size)
    if pseudo is None:
        cfg = stage_template("seg_teacher")
        _fill_pairs(cfg["train_dataloader"]["dataset"], labeled, seg_train_pipeline(model_cfg, aug))
    elif method == "zoph":
        batch = zoph_batch_size(batch, zoph_batch)
        # mmdet's MultiBranch packs each source into its branch; the scope prefix finds it from mmseg's registry
        pack = {name: _branch("PackSegInputs", name, scope="mmdet.") for name in ("human", "pseudo")}
        cfg = stage_template("seg_student_zoph")
        human_set, pseudo_set = cfg["train_dataloader"]["dataset"]["datasets"]
        _fill_pairs(human_set, labeled, seg_train_pipeline(model_cfg, aug, pack=pack["human"]))
        _fill_pairs(pseudo_set, pseudo, seg_train_pipeline(model_cfg, aug, pack=pack["pseudo"]))
        model = _fill_zoph_student(cfg, model, alpha, batch, normalize_loss)
    elif method != "st":
        raise ConfigError(f"unknown student method {method!r}; use 'zoph' or 'st'")
    else:
        if num_labeled is None:
            num_labeled = count_images(labeled)
        cfg = stage_template("seg_student_st")
        repeat, pseudo_set = cfg["train_dataloader"]["dataset"]["datasets"]
        repeat["times"] = oversample_times(num_labeled, num_pseudo)
        _fill_pairs(repeat["dataset"], labeled, seg_train_pipeline(model_cfg, WEAK))
        _fill_pairs(pseudo_set, pseudo, seg_train_pipeline(model_cfg, WEAK, strong=True))
    if val:
        _fill_pairs(cfg["val_dataloader"]["dataset"], val, seg_test_pipeline(model_cfg))
    return _fill_training(
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
    _fill_pairs(cfg["test_dataloader"]["dataset"], test, seg_test_pipeline(model_cfg))
    return _fill_test(cfg, seg_model(model_cfg, len(test.classes), pretrained=False), work_dir)


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


def training_stage(kind_folder: str, student_method: str | None) -> str:
    """The stage config (model_configs/stages/) of a training: '<det|seg>_teacher' or
    '<det|seg>_student_<method>'."""
    return f"{kind_folder}_teacher" if student_method is None else f"{kind_folder}_student_{student_method}"


def recipe_digest(stages: tuple[str, ...] = (), aug: tuple[str, ...] = (), tta: str | None = None) -> str:
    """Digest of the recipe files a stage is built from, for its store key: the stage configs
    (with their ``_base_`` files resolved), the augmentation presets (model_configs/aug/, and
    strong.py when 'strong' is named) and a TTA defaults file. Editing any of them changes the
    keys of the stages built from it, so that nothing trained with the old recipe is reused."""
    parts: dict[str, object] = {f"stage:{name}": stage_template(name) for name in stages}
    for name in aug:
        path = os.path.join(MODEL_CONFIGS, "aug", "strong.py") if name == "strong" else None
        parts[f"aug:{name.lower()}"] = Config.fromfile(path).to_dict() if path else aug_preset(name).to_dict()
    if tta is not None:
        parts[f"tta:{tta}"] = tta_defaults(tta).to_dict()
    return config_digest(parts)


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
