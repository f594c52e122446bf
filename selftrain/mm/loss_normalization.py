"""Loss normalisation for the self-training student (Zoph et al., 2020), inside OpenMMLab.

Zoph, Ghiasi, Lin, Cui, Liu, Cubuk, Le, "Rethinking Pre-training and Self-training",
NeurIPS 2020, Section 3.2 ("loss normalization"). With ``Lh`` the loss on the
human-labeled images and ``Lp`` the loss on the pseudo-labeled images of the same batch::

    L = 1/(1+a) * (Lh + a * (EMA(Lh)/EMA(Lp)) * Lp)

- ``EMA(.)`` are exponential moving averages of the *detached* total losses,
  ``ema = d*ema + (1-d)*x`` with decay ``d = 0.9997``; each EMA is initialised to its first
  observed value. Before each update the detached values are averaged across ranks with
  ``mmengine.dist.all_reduce(..., op='mean')`` (a no-op on one process), so every rank holds
  the same EMAs.
- The ratio ``EMA(Lh)/EMA(Lp)`` is a constant: no gradient flows into it.
- ``a`` (``alpha``) defaults to 1.0; ``a = 0`` gives exactly ``Lh``.
- ``normalize=False`` (an ablation, not the paper's recipe) trains on the plain weighted loss
  ``L = Lh + a * Lp``, the baseline of the paper's Appendix B experiment (at ``a = 4``); the EMAs
  are still kept and logged.

Usage in an mmdet 3.x config (``custom_imports = dict(imports=['selftrain.mm'])``)::

    model = dict(
        type='LossNormalizedDetector',
        detector=retinanet_cfg,             # any mmdet detector config
        alpha=1.0,
        data_preprocessor=dict(type='MultiBranchDataPreprocessor',
                               data_preprocessor=retinanet_cfg['data_preprocessor']))
    # labeled dataset pipeline ends with
    dict(type='MultiBranch', branch_field=['human', 'pseudo'], human=dict(type='PackDetInputs'))
    # pseudo-labeled dataset pipeline ends with
    dict(type='MultiBranch', branch_field=['human', 'pseudo'], pseudo=dict(type='PackDetInputs'))

Branches. mmdet's stock ``MultiBranchDataPreprocessor`` removes the ``None`` entries of each
branch but does not drop a branch that is ``None`` for every sample of the batch: it then
fails inside ``stack_batch`` ("`tensor_list` could not be an empty list"). With it every
batch must hold both kinds of images (mmdet's ``GroupMultiSourceSampler`` /
``MultiSourceSampler`` guarantee that). :class:`DropEmptyBranchesDataPreprocessor` (the
default when ``data_preprocessor`` is not given) drops such branches, and the wrapper then
applies these rules (documented on :meth:`LossNormalizedDetector.loss`):

- pseudo branch absent: ``L = Lh``;
- human branch absent: ``L = (EMA(Lh)/EMA(Lp)) * Lp`` when both EMAs exist (have seen a
  value), else ``L = Lp``; with ``a = 0`` the pseudo images carry no weight, so ``L = 0 * Lp``;
- an absent branch's EMA is not updated (across ranks: a branch's EMA is updated with the
  mean over the ranks where that branch is present and its loss is finite, and left as it
  is when no rank has it).

Checkpoints. The EMAs are persistent buffers (``ema_human``, ``ema_pseudo``: float64
scalars, NaN until first observed; ``ema_steps``: int64, the number of updates), so
mmengine's CheckpointHook saves them and ``resume`` restores them. Student parameters live
under ``detector.``; a load pre-hook maps prefix-less keys (a plain teacher checkpoint, via
``load_from``) to ``detector.<key>``. :data:`REVISE_KEYS` goes the other way (student checkpoint -> plain
detector, with ``mmengine.runner.load_checkpoint``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from mmdet.models.data_preprocessors import MultiBranchDataPreprocessor
from mmdet.models.detectors.base import BaseDetector
from mmdet.registry import MODELS
from mmengine.dist import all_reduce
from torch import Tensor, nn

__all__ = [
    "EMA_BUFFERS",
    "REVISE_KEYS",
    "DropEmptyBranchesDataPreprocessor",
    "LossNormalizedDetector",
    "ema_update",
    "normalized_loss",
    "total_loss",
]

DETECTOR_PREFIX = "detector."
#: Names of the wrapper's own (persistent) buffers.
EMA_BUFFERS = ("ema_human", "ema_pseudo", "ema_steps")
#: ``mmengine.runner.load_checkpoint(plain_detector, student_ckpt, revise_keys=REVISE_KEYS)``
#: loads a student checkpoint into a plain detector (the EMA buffers are then reported as
#: unexpected keys, which mmengine's default ``strict=False`` only logs).
REVISE_KEYS = [(r"^module\.", ""), (r"^detector\.", "")]


# --------------------------------------------------------------------------- pure maths


def normalized_loss(lh, lp, ema_h, ema_p, alpha: float = 1.0):
    """``L = 1/(1+a) * (Lh + a * (EMA(Lh)/EMA(Lp)) * Lp)`` (Zoph et al., 2020).

    ``lh``/``lp`` are the losses (tensors or numbers); ``ema_h``/``ema_p`` their EMAs, used
    as constants (tensors are detached, so no gradient flows into them). ``alpha == 0``
    returns ``lh`` itself (exactly ``Lh``, even when ``lp`` is not finite).
    """
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    if alpha == 0:
        return lh
    ratio = _constant(ema_h) / _constant(ema_p)
    if isinstance(ratio, Tensor) and isinstance(lp, Tensor):
        ratio = ratio.to(dtype=lp.dtype, device=lp.device)
    return (1.0 / (1.0 + alpha)) * (lh + alpha * ratio * lp)


def _constant(x):
    return x.detach() if isinstance(x, Tensor) else float(x)


def ema_update(ema: float | None, x: float, decay: float) -> float:
    """One EMA step: ``x`` when ``ema`` is None (first observation), else ``d*ema + (1-d)*x``."""
    if ema is None:
        return float(x)
    return decay * ema + (1.0 - decay) * float(x)


def total_loss(losses: Mapping[str, Any]) -> Tensor:
    """Sum of the entries whose key contains ``'loss'``, as ``mmengine`` ``BaseModel.parse_losses``.

    Tensors are averaged (``.mean()``), lists of tensors summed after averaging each.
    """
    parts = []
    for key, value in losses.items():
        if "loss" not in key:
            continue
        if isinstance(value, Tensor):
            parts.append(value.mean())
        elif isinstance(value, Sequence) and value and all(isinstance(v, Tensor) for v in value):
            parts.append(sum(v.mean() for v in value))
        else:
            raise TypeError(f"{key} is not a tensor or list of tensors")
    if not parts:
        raise ValueError(f"no loss entries (keys containing 'loss') in {list(losses)}")
    total: Tensor = parts[0]
    for part in parts[1:]:
        total = total + part
    return total


# --------------------------------------------------------------------------- state dicts


def _plain_keys_pre_hook(
    module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
) -> None:
    """Load pre-hook: prefix-less keys -> ``detector.<key>``; fill absent EMA buffers.

    Keys that already start with ``detector.`` and the wrapper's own keys (EMA buffers, its
    data preprocessor's persistent state) are left alone. EMA buffers absent from the state
    dict (a plain teacher checkpoint) keep their current values: no missing-key error, and
    on a freshly built student they stay uninitialised (``ema_steps == 0``).
    """
    own = {prefix + k for k in module.state_dict(keep_vars=True) if not k.startswith(DETECTOR_PREFIX)}
    remapped = False
    for key in [k for k in state_dict if k.startswith(prefix)]:
        rel = key[len(prefix) :]
        if rel.startswith(DETECTOR_PREFIX) or key in own:
            continue
        new = prefix + DETECTOR_PREFIX + rel
        if new in state_dict:  # both spellings given: keep the prefixed one, report the other
            continue
        state_dict[new] = state_dict.pop(key)
        remapped = True
    metadata = getattr(state_dict, "_metadata", None)
    if remapped and metadata is not None:
        base = prefix[:-1]
        for mkey in list(metadata):
            if base:
                if mkey == base or not mkey.startswith(prefix):
                    continue
                rel = mkey[len(prefix) :]
            else:
                rel = mkey
            if rel == "detector" or rel.startswith(DETECTOR_PREFIX):
                continue
            new = prefix + ("detector" if rel == "" else DETECTOR_PREFIX + rel)
            metadata.setdefault(new, metadata[mkey])
    for name in EMA_BUFFERS:
        if prefix + name not in state_dict:
            state_dict[prefix + name] = getattr(module, name).detach().clone()


# --------------------------------------------------------------------------- data preprocessor


@MODELS.register_module()
class DropEmptyBranchesDataPreprocessor(MultiBranchDataPreprocessor):
    """``MultiBranchDataPreprocessor`` that drops a branch absent from every sample of a batch.

    The stock one fails on such a batch (``stack_batch`` of an empty list); with this one a
    batch of only human (or only pseudo) images reaches
    :meth:`LossNormalizedDetector.loss` with that branch alone. Non-training data go to the
    inner preprocessor unchanged, as in the parent class.
    """

    def forward(self, data: dict, training: bool = False) -> dict:
        if training and isinstance(data, Mapping) and isinstance(data.get("inputs"), Mapping):
            inputs = data["inputs"]
            empty = [b for b, v in inputs.items() if v is None or all(x is None for x in v)]
            if empty:
                data = {
                    key: ({b: v for b, v in value.items() if b not in empty} if isinstance(value, Mapping) else value)
                    for key, value in data.items()
                }
        return super().forward(data, training)


# --------------------------------------------------------------------------- the wrapper


@MODELS.register_module()
class LossNormalizedDetector(BaseDetector):
    """Student detector trained with Zoph et al. (2020) loss normalisation.

    ``L = 1/(1+a) * (Lh + a * (EMA(Lh)/EMA(Lp)) * Lp)``, see the module docstring.

    Args:
        detector: config of the inner mmdet detector (built with ``MODELS.build``).
        alpha: ``a``, the weight of the pseudo-labeled loss; ``0`` gives exactly ``Lh``.
        ema_decay: ``d`` in ``ema = d*ema + (1-d)*x``.
        normalize: False for the plain weighted loss ``Lh + a * Lp`` (an ablation).
        human_branch / pseudo_branch: the ``MultiBranch`` branch names.
        data_preprocessor: normally ``MultiBranchDataPreprocessor`` (or
            :class:`DropEmptyBranchesDataPreprocessor`) around the detector's
            ``DetDataPreprocessor``. When None and the detector config has a
            ``data_preprocessor``, ``DropEmptyBranchesDataPreprocessor`` around it is used.
        init_cfg: mmengine init config of the wrapper.
    """

    def __init__(
        self,
        detector: dict,
        alpha: float = 1.0,
        ema_decay: float = 0.9997,
        human_branch: str = "human",
        pseudo_branch: str = "pseudo",
        data_preprocessor: dict | None = None,
        init_cfg=None,
        normalize: bool = True,
    ) -> None:
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        if not 0.0 <= ema_decay <= 1.0:
            raise ValueError(f"ema_decay must be in [0, 1], got {ema_decay}")
        if human_branch == pseudo_branch:
            raise ValueError(f"human_branch and pseudo_branch must differ, both are {human_branch!r}")
        if data_preprocessor is None and isinstance(detector, Mapping) and detector.get("data_preprocessor"):
            data_preprocessor = dict(
                type="DropEmptyBranchesDataPreprocessor", data_preprocessor=detector["data_preprocessor"]
            )
        if isinstance(data_preprocessor, Mapping):  # mmdet's registry, whatever the default scope
            data_preprocessor = MODELS.build(data_preprocessor)
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        # the inner model: an mmdet detector or an mmseg segmentor (duck-typed calls)
        self.detector: Any = detector if isinstance(detector, nn.Module) else MODELS.build(detector)
        self.alpha = float(alpha)
        self.normalize = bool(normalize)
        self.ema_decay = float(ema_decay)
        self.human_branch = human_branch
        self.pseudo_branch = pseudo_branch
        self.register_buffer("ema_human", torch.tensor(math.nan, dtype=torch.float64))
        self.register_buffer("ema_pseudo", torch.tensor(math.nan, dtype=torch.float64))
        self.register_buffer("ema_steps", torch.tensor(0, dtype=torch.int64))
        self._register_load_state_dict_pre_hook(_plain_keys_pre_hook, with_module=True)

    # ------------------------------------------------------------------ delegation

    @property
    def with_neck(self) -> bool:
        return self.detector.with_neck

    @property
    def with_shared_head(self) -> bool:
        return self.detector.with_shared_head

    @property
    def with_bbox(self) -> bool:
        return self.detector.with_bbox

    @property
    def with_mask(self) -> bool:
        return self.detector.with_mask

    def predict(self, batch_inputs: Tensor, batch_data_samples, rescale: bool = True):
        return self.detector.predict(batch_inputs, batch_data_samples, rescale=rescale)

    def _forward(self, batch_inputs: Tensor, batch_data_samples=None):
        return self.detector._forward(batch_inputs, batch_data_samples)

    def extract_feat(self, batch_inputs: Tensor):
        return self.detector.extract_feat(batch_inputs)

    # ------------------------------------------------------------------ EMA state

    def ema_ratio(self) -> float | None:
        """``EMA(Lh)/EMA(Lp)`` as a float; None unless both EMAs exist and ``EMA(Lp) > 0``."""
        h, p = float(self.ema_human), float(self.ema_pseudo)
        if math.isfinite(h) and math.isfinite(p) and p > 0:
            return h / p
        return None

    @torch.no_grad()
    def _update_emas(self, lh: Tensor | None, lp: Tensor | None) -> None:
        """All-reduce (mean) the detached losses, then update the EMA of each branch seen."""
        dev = self.ema_human.device
        vals, counts = [], []
        for loss in (lh, lp):
            if loss is None:
                vals.append(torch.zeros((), dtype=torch.float64, device=dev))
                counts.append(torch.zeros((), dtype=torch.float64, device=dev))
            else:
                v = loss.detach().to(device=dev, dtype=torch.float64)
                finite = torch.isfinite(v)
                vals.append(torch.where(finite, v, torch.zeros_like(v)))
                counts.append(finite.to(torch.float64))
        # [sum_h, sum_p, n_h, n_p] / world_size: mean(sum)/mean(n) = mean over ranks that have it
        stats = torch.stack(vals + counts)
        all_reduce(stats, op="mean")
        sum_h, sum_p, n_h, n_p = stats.tolist()
        updated = False
        for buf, s, n in ((self.ema_human, sum_h, n_h), (self.ema_pseudo, sum_p, n_p)):
            if n > 0:
                prev = float(buf)
                buf.fill_(ema_update(prev if math.isfinite(prev) else None, s / n, self.ema_decay))
                updated = True
        if updated:
            self.ema_steps += 1

    # ------------------------------------------------------------------ loss

    def _branch(self, inputs, samples, branch):
        if branch not in inputs or branch not in samples:
            return None
        x, ds = inputs[branch], samples[branch]
        if x is None or ds is None or len(ds) == 0 or (isinstance(x, Tensor) and x.shape[0] == 0):
            return None
        return x, ds

    def loss(self, multi_batch_inputs: dict[str, Tensor], multi_batch_data_samples: dict[str, list]) -> dict:
        """Normalised loss of a multi-branch batch: ``{'loss': L, <detached logging entries>}``.

        Both branches present: ``L = 1/(1+a) * (Lh + a * (EMA(Lh)/EMA(Lp)) * Lp)``, the EMAs
        updated with this batch first (``normalize=False``: ``L = Lh + a * Lp``, and ``a * Lp``
        without the human branch). Pseudo branch absent: ``L = Lh``. Human branch absent:
        ``L = (EMA(Lh)/EMA(Lp)) * Lp`` when both EMAs exist, else ``L = Lp`` (``0 * Lp`` when
        ``a == 0``). An absent branch's EMA is not updated. The logging entries
        (``human_total``, ``pseudo_total``, ``ema_human``, ``ema_pseudo``, ``human_weight``,
        ``pseudo_weight``, ``ema_steps`` and each branch's components as
        ``human_<key without 'loss'>`` / ``pseudo_...``) have keys without ``'loss'``, so mmengine sums
        only ``L``. ``pseudo_weight`` is the factor applied to ``Lp``
        (``a*EMA(Lh)/EMA(Lp)/(1+a)`` with both branches).
        """
        if not isinstance(multi_batch_inputs, Mapping) or not isinstance(multi_batch_data_samples, Mapping):
            raise TypeError(
                "LossNormalizedDetector.loss needs multi-branch inputs (dicts keyed by branch); "
                "use MultiBranch pipelines and MultiBranchDataPreprocessor / "
                f"DropEmptyBranchesDataPreprocessor, got {type(multi_batch_inputs).__name__}"
            )
        known = {self.human_branch, self.pseudo_branch}
        extra = (set(multi_batch_inputs) | set(multi_batch_data_samples)) - known
        if extra:
            raise ValueError(f"unknown branches {sorted(extra)}; expected {sorted(known)}")
        h = self._branch(multi_batch_inputs, multi_batch_data_samples, self.human_branch)
        p = self._branch(multi_batch_inputs, multi_batch_data_samples, self.pseudo_branch)
        if h is None and p is None:
            raise ValueError(f"batch has neither a {self.human_branch!r} nor a {self.pseudo_branch!r} branch")

        dicts: dict[str, dict] = {}  # keyed by role ('human'/'pseudo'), not branch name
        lh = lp = None
        if h is not None:
            dicts["human"] = self.detector.loss(*h)
            lh = total_loss(dicts["human"])
        if p is not None:
            dicts["pseudo"] = self.detector.loss(*p)
            lp = total_loss(dicts["pseudo"])

        self._update_emas(lh, lp)
        ratio = self.ema_ratio()
        a = self.alpha
        if lp is None:
            loss, w_h, w_p = lh, 1.0, 0.0
        elif not self.normalize:  # the plain weighted loss (ablation)
            w_h, w_p = (0.0 if lh is None else 1.0), a
            loss = a * lp if lh is None else lh + a * lp
        elif lh is None:
            w_h = 0.0
            w_p = 0.0 if a == 0 else (ratio if ratio is not None else 1.0)
            loss = w_p * lp
        else:
            if ratio is not None:
                loss = normalized_loss(lh, lp, self.ema_human, self.ema_pseudo, a)
            else:  # EMA(Lp) not positive or not finite: no normalisation
                loss = normalized_loss(lh, lp, 1.0, 1.0, a)
            w_h = 1.0 / (1.0 + a)
            w_p = a * (ratio if ratio is not None else 1.0) / (1.0 + a)

        assert loss is not None  # a batch without either branch was refused above
        ref = loss.detach()
        const = lambda v: torch.as_tensor(float(v), dtype=ref.dtype, device=ref.device)  # noqa: E731
        out: dict[str, Tensor] = {"loss": loss}
        for role, losses in dicts.items():
            for key, value in losses.items():
                comp = key
                while "loss" in comp:
                    comp = comp.replace("loss", "")
                name = f"{role}_{comp.strip('_') or 'main'}"
                if isinstance(value, Tensor):
                    out[name] = value.detach().mean()
                elif isinstance(value, Sequence) and value and all(isinstance(v, Tensor) for v in value):
                    out[name] = sum(v.detach().mean() for v in value)
        if lh is not None:
            out["human_total"] = lh.detach()
        if lp is not None:
            out["pseudo_total"] = lp.detach()
        for name in ("ema_human", "ema_pseudo"):
            value = float(getattr(self, name))
            if math.isfinite(value):
                out[name] = const(value)
        out["ema_steps"] = const(int(self.ema_steps))
        out["human_weight"] = const(w_h)
        out["pseudo_weight"] = const(w_p)
        return out
