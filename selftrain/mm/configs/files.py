"""The recipe files of model_configs/: finding and loading them, and their digests for store keys.

model_configs/ holds OpenMMLab config files (read by mmengine's ``Config.fromfile``): model
configs (det/, seg/), stage configs (stages/, each with its ``_base_`` files), pipelines
(pipelines/), augmentation presets (aug/) and TTA defaults (tta/).
"""

from __future__ import annotations

import copy
import json
import os

from mmengine.config import Config

from storage.keys import digest_json

# the folder beside the packages (a checkout, or site-packages for a wheel install)
MODEL_CONFIGS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))), "model_configs"
)
AUG_PRESETS = ("s1", "s2", "s3", "s4")
WEAK = "weak"  # ST / ST++ weak augmentation, model_configs/aug/weak.py


class ConfigError(ValueError):
    """A recipe or model config that cannot be found, loaded or filled; the message names it."""


def stage_configs_dir() -> str:
    """model_configs/stages/: one file per stage; what a run fills is None there."""
    return os.path.join(MODEL_CONFIGS, "stages")


def resolve_config_path(name: str, kind: str = "det") -> str:
    """'det/retinanet_mnv2_256_cpu', 'retinanet_mnv2_256_cpu' or a path to a .py config.
    Raises ConfigError listing the configs of ``kind`` ('det' | 'seg') when none is found."""
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
    """A model config (model, img_scale, batch_size, optimiser...); ConfigError names a broken file."""
    path = resolve_config_path(name, kind)
    try:
        return Config.fromfile(path)
    except Exception as exc:  # noqa: BLE001 - a broken config file gets its name in the error
        raise ConfigError(f"cannot load model config {path}: {type(exc).__name__}: {exc}") from exc


def config_digest(cfg: Config | dict) -> str:
    """Digest of a resolved config (its content, not its file name or location)."""
    data = cfg.to_dict() if isinstance(cfg, Config) else cfg
    return digest_json(json.loads(json.dumps(data, default=repr, sort_keys=True)))


def aug_preset(name: str) -> Config:
    """An augmentation preset of model_configs/aug/ (S1..S4 of Zoph et al. 2020, or 'weak'):
    ``policy`` (a transform list), ``scale_jitter`` (min, max ratio), ``flip_prob`` in [0, 1]."""
    key = name.lower()
    if key not in AUG_PRESETS + (WEAK,):
        raise ConfigError(f"unknown augmentation preset {name!r}; use one of {[p.upper() for p in AUG_PRESETS]}")
    return Config.fromfile(os.path.join(MODEL_CONFIGS, "aug", f"{key}.py"))


STRONG = "strong"  # ST / ST++ strong augmentation of the reference code, model_configs/aug/strong.py
NO_STRONG = "none"  # no strong augmentation: the pseudo-labeled images get the weak one only


def strong_names() -> list[str]:
    """The strong augmentation files of model_configs/aug/ (``strong*.py``), and 'none'."""
    folder = os.path.join(MODEL_CONFIGS, "aug")
    return sorted(f[:-3] for f in os.listdir(folder) if f.startswith(STRONG) and f.endswith(".py")) + [NO_STRONG]


def strong_file(name: str) -> str:
    """The path of strong augmentation ``name``: model_configs/aug/<name>.py, a file named
    ``strong*.py``. Raises ConfigError for any other name, listing the choices."""
    folder = os.path.join(MODEL_CONFIGS, "aug")
    path = os.path.join(folder, f"{name}.py")
    if os.path.basename(name) != name or not name.startswith(STRONG) or not os.path.isfile(path):
        raise ConfigError(
            f"unknown strong augmentation {name!r}; use one of {strong_names()}: the name (not a path) of a "
            f"file {folder}/strong*.py holding a transform list named after the task ('det' or 'seg'), or 'none'"
        )
    return path


def strong_transforms(task: str, name: str = STRONG) -> list[dict]:
    """ST / ST++ strong augmentation for 'det' or 'seg': the ``det`` / ``seg`` list of
    model_configs/aug/<name>.py (default 'strong', the ST++ reference's values), or [] for
    'none'. Raises ConfigError for a name that is not such a file (listing them) or a file
    without the task's list."""
    if name == NO_STRONG:
        return []
    path = strong_file(name)
    try:
        strong = Config.fromfile(path)
    except Exception as exc:  # noqa: BLE001 - a broken file gets its name in the error
        raise ConfigError(f"cannot load strong augmentation {path}: {type(exc).__name__}: {exc}") from exc
    if task not in strong:
        raise ConfigError(f"strong augmentation {path} has no {task!r} transform list")
    if not isinstance(strong[task], list) or not all(isinstance(t, dict) and "type" in t for t in strong[task]):
        raise ConfigError(f"strong augmentation {path}: {task!r} must be a list of transform dicts with a 'type'")
    return copy.deepcopy(list(strong[task]))


def _public(path: str) -> dict:
    """A config file with its ``_base_`` files resolved, as a plain dict; helper variables
    (names starting with ``_``) dropped."""
    cfg = Config.fromfile(path).to_dict()
    return {key: value for key, value in cfg.items() if not key.startswith("_")}


def stage_template(name: str) -> dict:
    """A stage config of model_configs/stages/ (``det_teacher``, ``det_student_zoph``, ...) with
    its ``_base_`` files resolved, as a plain dict; helper variables (names starting with
    ``_``) dropped. Its ``None`` values are what a run fills. Raises ConfigError for an
    unknown name, listing the stage configs."""
    path = os.path.join(stage_configs_dir(), f"{name}.py")
    if not os.path.isfile(path):
        raise ConfigError(f"no stage config {name!r}; stage configs: {stage_names()}")
    return _public(path)


def stage_names() -> list[str]:
    return sorted(f[:-3] for f in os.listdir(stage_configs_dir()) if f.endswith(".py"))


def pipelines_file(kind_folder: str) -> dict:
    """model_configs/pipelines/<det|seg>.py as a plain dict: ``train_pipeline``,
    ``test_pipeline``, ``tta_pipeline``, ``tta_flip_views`` (templates; see that file)."""
    path = os.path.join(MODEL_CONFIGS, "pipelines", f"{kind_folder}.py")
    if not os.path.isfile(path):
        raise ConfigError(f"no pipelines file for {kind_folder!r}: {path}")
    return _public(path)


def training_stage(kind_folder: str, student_method: str | None) -> str:
    """The stage config (model_configs/stages/) of a training: '<det|seg>_teacher' or
    '<det|seg>_student_<method>'."""
    return f"{kind_folder}_teacher" if student_method is None else f"{kind_folder}_student_{student_method}"


def tta_defaults(name: str) -> Config:
    """A TTA defaults file of model_configs/tta/ (views and merge settings)."""
    return Config.fromfile(os.path.join(MODEL_CONFIGS, "tta", name))


def recipe_digest(stages: tuple[str, ...] = (), aug: tuple[str, ...] = (), tta: str | None = None) -> str:
    """Digest of the recipe files a stage is built from, for its store key: the stage configs
    (with their ``_base_`` files resolved) and their task's pipelines file (pipelines/det.py for
    ``det_*``), the augmentation presets (model_configs/aug/) and strong augmentation files
    (model_configs/aug/strong*.py) named in ``aug``, and a TTA defaults file with its task's
    pipelines. Editing any of them changes the keys of the stages built from it, so that
    nothing trained with the old recipe is reused."""
    parts: dict[str, object] = {f"stage:{name}": stage_template(name) for name in stages}
    for name in aug:
        if not name.startswith(STRONG):
            parts[f"aug:{name.lower()}"] = aug_preset(name).to_dict()
        else:  # a strong augmentation file, model_configs/aug/strong*.py
            parts[f"aug:{name}"] = Config.fromfile(strong_file(name)).to_dict()
    if tta is not None:
        parts[f"tta:{tta}"] = tta_defaults(tta).to_dict()
    for folder in sorted({name.split("_")[0] for name in (*stages, *([tta] if tta else []))}):
        parts[f"pipelines:{folder}"] = pipelines_file(folder)
    return config_digest(parts)
