"""Model dicts from a model config: heads sized for the registered classes, pretrained or not."""

from __future__ import annotations

import copy

from mmengine.config import Config, ConfigDict

from selftrain.mm.configs.files import ConfigError


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


def build_model(model_cfg: Config, pretrained: bool, scope: str = "mmdet", num_classes: int | None = None) -> dict:
    """The model dict of a model config, sized for ``num_classes`` (None: as configured).

    ``pretrained=False`` removes every pretrained initialisation (the backbone's ``init_cfg``
    and a segmentor's model-level ``pretrained`` URL): the random-initialisation control.
    Raises ConfigError for an unknown ``pretrained_backbone`` name."""
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
    return build_model(model_cfg, pretrained, num_classes=num_classes)


def seg_model(model_cfg: Config, num_classes: int, pretrained: bool) -> dict:
    """The segmentor with ``num_classes`` outputs in every head, optionally ImageNet-initialised."""
    return build_model(model_cfg, pretrained, scope="mmseg", num_classes=num_classes)
