"""What every training stage shares: the schedule, K checkpoints, validation, the Zoph et al.
student's wrapper and sampler, and the test stage's kept keys."""

from __future__ import annotations

import copy

from mmengine.config import Config

from selftrain.mm.configs.files import ConfigError


def branch_packing(pack: str, name: str, scope: str = "") -> dict:
    """mmdet's MultiBranch packing one source's samples into branch ``name`` (human / pseudo)."""
    return dict(type=f"{scope}MultiBranch", branch_field=["human", "pseudo"], **{name: dict(type=pack)})


def fill_zoph_student(cfg: dict, model: dict, alpha: float, batch: int, normalize_loss: bool = True) -> dict:
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


def fill_training(
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


def fill_test(cfg: dict, model: dict, work_dir: str) -> Config:
    """A test stage template filled: the model and work folder; only the test parts kept."""
    cfg.update(model=model, work_dir=work_dir)
    return Config({key: cfg[key] for key in TEST_KEYS})
