"""Run-time fixes that make the pinned OpenMMLab stack work on the pinned torch.

Nothing here edits installed files. The set-up writes ``selftrain-compat.pth`` into the
virtual environment's site-packages; Python executes that one line at start-up in every
process of the environment (pytest, Prefect workers, torchrun children, DataLoader
workers), and it only installs a tiny import hook. The hook does its work the first time
``torchvision`` or ``mmengine`` is imported, so processes that never touch them pay nothing
and never import torch because of us.

The two problems it solves (measured, see README "Set-up notes"):

1. torchvision on PyPI is a CUDA build. Next to the CPU torch its compiled extension
   ``torchvision/_C.so`` cannot load, and ``import torchvision`` then crashes with
   ``RuntimeError: operator torchvision::nms does not exist`` because its
   ``_meta_registrations`` registers a fake kernel for ``torchvision::nms`` without checking
   the extension loaded. mmengine's Runner imports torchvision when it collects environment
   information, so a broken torchvision breaks every training run. When (and only when) the
   extension cannot load, we define the ``torchvision::nms`` / ``torchvision::qnms`` schemas
   with a plain-torch CPU kernel before torchvision is imported, and let
   ``torchvision.ops.nms`` reach it. Every other torchvision C++ op keeps torchvision's own
   clear "Couldn't load custom C++ ops" error. On a CUDA machine with a matching torchvision
   the extension loads and nothing is changed.

2. torch >= 2.6 loads checkpoints with ``weights_only=True``. mmengine 0.10.7 checkpoints
   contain its ``HistoryBuffer`` and numpy arrays/scalars in the message hub, which the safe
   unpickler rejects, so ``load_from``, ``resume`` and TTA checkpoint loading all fail. Instead
   of turning the safety off for every load (``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``), we add
   exactly those types to torch's allow-list: checkpoints still cannot execute code.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import os
import pickle
import sys
import threading

_lock = threading.Lock()
_done: set[str] = set()


# --------------------------------------------------------------------------- torchvision


def _torchvision_extension_loads() -> bool:
    """Whether torchvision's own compiled ops load next to this torch."""
    import torch

    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return False
    for folder in spec.submodule_search_locations:
        for name in os.listdir(folder):
            if name.startswith("_C.") and name.endswith((".so", ".pyd")):
                try:
                    torch.ops.load_library(os.path.join(folder, name))
                    return True
                except (OSError, RuntimeError):
                    return False
    return False


def nms_reference(boxes, scores, iou_threshold: float):
    """Greedy NMS with torchvision's semantics, in plain torch.

    Boxes are (x1, y1, x2, y2) without the +1 pixel convention; a box is dropped when its
    IoU with an already kept, higher-scoring box is strictly greater than the threshold.
    Returns int64 indices of the kept boxes in decreasing score order.
    """
    import torch

    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.long, device=boxes.device)
    boxes = boxes.float()
    order = torch.sort(scores.float(), descending=True, stable=True).indices
    x1, y1, x2, y2 = boxes.unbind(1)
    areas = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    lt = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
    rb = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = areas[:, None] + areas[None, :] - inter
    iou = torch.where(union > 0, inter / union, torch.zeros_like(inter))
    suppressed = torch.zeros(boxes.shape[0], dtype=torch.bool, device=boxes.device)
    keep = []
    for idx in order.tolist():
        if suppressed[idx]:
            continue
        keep.append(idx)
        suppressed |= iou[idx] > iou_threshold
    return torch.tensor(keep, dtype=torch.long, device=boxes.device)


_TV_LIBRARY = None  # keeps the torch.library registration alive for the process


def _prepare_torchvision() -> None:
    global _TV_LIBRARY
    if _torchvision_extension_loads():
        return
    import torch

    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.impl("nms", nms_reference, "CPU")

    def _qnms(dets, scores, iou_threshold):
        raise RuntimeError("quantized NMS is not available: torchvision's C++ ops did not load")

    lib.impl("qnms", _qnms, "CPU")
    _TV_LIBRARY = lib


def _after_torchvision(module) -> None:
    """torchvision.ops.nms asserts the C++ extension loaded; let it use our kernel."""
    import torch

    if getattr(_TV_LIBRARY, "ns", None) != "torchvision":
        return
    import torchvision.ops.boxes as boxes_mod

    original = boxes_mod._assert_has_ops

    def _assert_nms_available() -> None:
        # nms and batched_nms are the only callers in torchvision.ops.boxes.
        if not hasattr(torch.ops.torchvision, "nms"):
            original()

    boxes_mod._assert_has_ops = _assert_nms_available


# --------------------------------------------------------------------------- mmengine


def _prepare_mmengine() -> None:
    pass


def _after_mmengine(module) -> None:
    allow_mmengine_checkpoints()


def allow_mmengine_checkpoints() -> None:
    """Allow-list the non-tensor types mmengine puts in its checkpoints (weights_only load).

    The message hub holds ``HistoryBuffer`` objects and numpy arrays/scalars. A
    HistoryBuffer also pickles its statistics methods as ``getattr(HistoryBuffer, "min")``;
    allowing the real ``builtins.getattr`` would let a checkpoint reach any attribute of any
    allowed object, so ``builtins.getattr`` is mapped to a stand-in that resolves exactly
    those methods and refuses everything else.
    """
    import numpy as np
    import torch
    from mmengine.logging.history_buffer import HistoryBuffer

    def _history_buffer_getattr(obj, name):
        if obj is HistoryBuffer and name in ("min", "max", "current", "mean"):
            return getattr(HistoryBuffer, name)
        raise pickle.UnpicklingError(
            f"checkpoint asks for getattr({getattr(obj, '__name__', type(obj).__name__)}, {name!r}); "
            "only HistoryBuffer statistics are allowed"
        )

    multiarray = importlib.import_module(f"numpy.{'_core' if hasattr(np, '_core') else 'core'}.multiarray")
    safe: list = [
        HistoryBuffer,
        np.ndarray,
        np.dtype,
        multiarray._reconstruct,
        multiarray.scalar,
        (_history_buffer_getattr, "builtins.getattr"),
    ]
    # numpy >= 1.25 pickles dtypes through their classes (numpy.dtypes.Float64DType ...)
    for code in "?bBhHiIlLqQefdgFDG":
        safe.append(type(np.dtype(code)))
    torch.serialization.add_safe_globals(safe)


# --------------------------------------------------------------------------- import hook

_PREPARE = {"torchvision": _prepare_torchvision, "mmengine": _prepare_mmengine}
_AFTER = {"torchvision": _after_torchvision, "mmengine": _after_mmengine}


class _Loader(importlib.abc.Loader):
    def __init__(self, name, loader):
        self._name, self._loader = name, loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        _AFTER[self._name](module)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname not in _PREPARE or fullname in _done:
            return None
        with _lock:
            if fullname in _done:
                return None
            _done.add(fullname)
            _PREPARE[fullname]()
            spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(fullname, spec.loader)
        return spec


def install() -> None:
    """Install the import hook (idempotent). Called from selftrain-compat.pth."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
    for name in list(_PREPARE):
        if name in sys.modules and name not in _done:
            # Imported before the hook existed (not the case with the .pth file).
            _done.add(name)
            _AFTER[name](sys.modules[name])
