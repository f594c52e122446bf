"""Pipelines of every stage, filled from model_configs/pipelines/<det|seg>.py.

A template's ``None`` values are filled from the model config (sizes) and the augmentation
preset (ratio range, flip probability); its marker strings ("{policy}", "{strong}",
"{scales}", "{flips}") are replaced by lists spliced in. Every value comes from a file; the
code here only puts the run's values in their places.
"""

from __future__ import annotations

import copy
import inspect

from mmengine.config import Config

from selftrain.mm.configs.files import ConfigError, aug_preset, pipelines_file, strong_transforms


def _template(kind_folder: str, name: str) -> list:
    return copy.deepcopy(list(pipelines_file(kind_folder)[name]))


def _splice(steps: list, marker: str, items: list) -> list:
    """``steps`` with the marker string replaced by ``items`` (none: the marker dropped)."""
    out: list = []
    for step in steps:
        out.extend(items if step == marker else [step])
    return out


def _fill(steps: list, transform: str, **values) -> None:
    """Set the ``None`` keys ``values`` names on every top-level step of type ``transform``."""
    for step in steps:
        if isinstance(step, dict) and step.get("type") == transform:
            for key, value in values.items():
                if key in step and step[key] is None:
                    step[key] = value


def _filled(steps: list, where: str) -> list:
    """The template's steps, checked after filling: no ``None`` left at a step's top level (a
    template this code cannot fill names itself in the ConfigError). Spliced-in lists are
    not checked: their values come from their own files."""
    for i, step in enumerate(steps):
        if isinstance(step, dict):
            for key, value in step.items():
                if value is None:
                    raise ConfigError(f"{where}: step {i} ({step.get('type')}).{key} is None after filling")
    return steps


def _spliced(steps: list, where: str, **lists: list) -> list:
    """``steps`` with each marker string "{name}" replaced by ``lists[name]``; ConfigError for a
    marker left."""
    for name, items in lists.items():
        steps = _splice(steps, "{" + name + "}", items)
    left = [s for s in steps if isinstance(s, str)]
    if left:
        raise ConfigError(f"{where}: markers {left} were not filled")
    return steps


def _without(steps: list, transform: str) -> list:
    return [s for s in steps if not (isinstance(s, dict) and s.get("type") == transform)]


def _loader(steps: list, skip_unreadable: bool) -> list:
    if skip_unreadable:
        steps[0]["type"] = "LoadImageOrMarkUnreadable"
    return steps


def _train_pipeline(
    kind_folder: str, aug: str, *, scale: tuple, crop: tuple, strong: str | None, pack: dict | None
) -> list[dict]:
    """pipelines/<kind_folder>.py's train_pipeline filled: resize around ``scale`` (w, h) with
    the preset's ratio range, crop to ``crop`` (h, w), the preset's flip probability; the
    preset's policy (mmdet-scoped for segmentation) and ST's strong augmentation ``strong`` (a
    name of :func:`strong_transforms`; None: none) spliced in; ``pack`` instead of the last
    step when given."""
    preset = aug_preset(aug)
    where = f"pipelines/{kind_folder}.py train_pipeline"
    steps = _template(kind_folder, "train_pipeline")
    _fill(steps, "RandomResize", scale=scale, ratio_range=tuple(preset.scale_jitter))
    _fill(steps, "RandomCrop", crop_size=crop)
    _fill(steps, "RandomFlip", prob=float(preset.flip_prob))
    steps = _filled(steps, where)
    if pack:
        steps[-1] = pack
    policy = copy.deepcopy(list(preset.policy))
    return _spliced(
        steps,
        where,
        policy=mmdet_scoped(policy) if kind_folder == "seg" else policy,
        strong=strong_transforms(kind_folder, strong) if strong else [],
    )


def det_train_pipeline(model_cfg: Config, aug: str, pack: dict | None = None, strong: str | None = None) -> list[dict]:
    """Load -> preset policy (AutoAugment / RandAugment) -> scale jitter -> crop -> flip
    [-> ST strong augmentation ``strong``, model_configs/aug/<strong>.py] -> pack
    (model_configs/pipelines/det.py). ``pack`` replaces the last step (a Zoph et al. student's
    branch packing). Raises ConfigError for an unknown preset or strong augmentation."""
    w, h = model_cfg.img_scale
    return _train_pipeline("det", aug, scale=(w, h), crop=(h, w), strong=strong, pack=pack)


def det_test_pipeline(model_cfg: Config, with_ann: bool = True, skip_unreadable: bool = False) -> list[dict]:
    """Load -> resize to the model's ``img_scale`` -> [annotations] -> pack (pipelines/det.py)."""
    w, h = model_cfg.img_scale
    steps = _loader(_template("det", "test_pipeline"), skip_unreadable)
    _fill(steps, "Resize", scale=(w, h))
    return _filled(steps if with_ann else _without(steps, "LoadAnnotations"), "pipelines/det.py test_pipeline")


def _tta_pipeline(kind_folder: str, model_cfg: Config, scales: list[float], flip: bool) -> list[dict]:
    if not scales or any(s <= 0 for s in scales):
        raise ConfigError(f"TTA scales must be positive numbers, got {scales}")
    w, h = model_cfg.img_scale
    views = _template(kind_folder, "tta_flip_views")
    steps = _template(kind_folder, "tta_pipeline")
    resizes = [dict(type="Resize", scale=(round(w * s), round(h * s)), keep_ratio=True) for s in scales]
    flips = views if flip else [v for v in views if v["prob"] == 0.0]
    where = f"pipelines/{kind_folder}.py tta_pipeline"
    for step in steps:
        if step.get("type") == "TestTimeAug":
            spliced: dict[str, list] = {"{scales}": resizes, "{flips}": flips}
            unknown = [t for t in step["transforms"] if isinstance(t, str) and t not in spliced]
            if unknown:
                raise ConfigError(f"{where}: unknown markers {unknown}; TestTimeAug takes {sorted(spliced)}")
            step["transforms"] = [spliced[t] if isinstance(t, str) else t for t in step["transforms"]]
    return _filled(steps, where)


def det_tta_pipeline(model_cfg: Config, scales: list[float], flip: bool) -> list[dict]:
    """Multi-scale x flip views of each image for mmdet's DetTTAModel (docs/design.md §3.2);
    ``scales`` relative to the test size, each > 0 (ConfigError otherwise)."""
    return _tta_pipeline("det", model_cfg, scales, flip)


def seg_tta_pipeline(model_cfg: Config, scales: list[float], flip: bool) -> list[dict]:
    """Multi-scale x flip views for ConfidentSegTTAModel; scales relative to the test size."""
    return _tta_pipeline("seg", model_cfg, scales, flip)


def mmdet_scoped(policy: list[dict]) -> list[dict]:
    """A preset's AutoAugment / RandAugment policy for an mmseg pipeline: every transform named
    with its mmdet scope (``mmdet.Rotate``...), and mmdet's default sub-policies written out so
    that they are scoped too. mmdet's geometric ops move a label map with the image and fill
    what they uncover with 255 (ignored), its colour ops leave the map alone."""
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


def seg_train_pipeline(model_cfg: Config, aug: str, strong: str | None = None, pack: dict | None = None) -> list[dict]:
    """Load -> [preset policy] -> resize with the preset's ratio jitter -> crop -> flip
    [-> ST strong augmentation ``strong``, model_configs/aug/<strong>.py] -> pack
    (model_configs/pipelines/seg.py). The S2..S4 policies are mmdet's AutoAugment /
    RandAugment, scoped for mmseg (:func:`mmdet_scoped`), as Zoph et al. use the presets for
    segmentation too. Raises ConfigError for an unknown preset or strong augmentation."""
    w, h = model_cfg.img_scale
    return _train_pipeline("seg", aug, scale=(w, h), crop=tuple(model_cfg.crop_size), strong=strong, pack=pack)


def seg_test_pipeline(model_cfg: Config, with_ann: bool = True, skip_unreadable: bool = False) -> list[dict]:
    """Load -> resize to the model's ``img_scale`` -> [annotations] -> pack (pipelines/seg.py)."""
    w, h = model_cfg.img_scale
    steps = _loader(_template("seg", "test_pipeline"), skip_unreadable)
    _fill(steps, "Resize", scale=(w, h))
    return _filled(steps if with_ann else _without(steps, "LoadAnnotations"), "pipelines/seg.py test_pipeline")
