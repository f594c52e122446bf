"""Batched inference over a list of images with an OpenMMLab model: the loop that pseudo
labelling and stability scoring share. The model and the test-time pipeline come from the
config builder; this only loads weights and feeds batches."""

from __future__ import annotations

import os
from collections.abc import Iterator


class ImageList:
    """Images (dicts with image_uri) through a test pipeline: a map-style dataset for DataLoader."""

    def __init__(self, images: list[dict], pipeline):
        self.images, self.pipeline = images, pipeline

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return self.pipeline({"img_path": self.images[i]["image_uri"], "img_id": i})


def build_model(model_dict: dict, scope: str, checkpoint: str | None = None):
    """Build a model from a config dict in ``scope``, load a checkpoint, move it to the device, eval()."""
    from mmengine.config import ConfigDict
    from mmengine.device import get_device
    from mmengine.registry import init_default_scope
    from mmengine.runner import load_checkpoint

    import selftrain.mm  # noqa: F401 - registers the project's models and transforms
    from selftrain.mm.loss_normalization import REVISE_KEYS

    init_default_scope(scope)
    if scope == "mmdet":
        from mmdet.registry import MODELS
    else:
        from mmseg.registry import MODELS
    model = MODELS.build(ConfigDict(model_dict))
    if checkpoint is not None:
        target = model.module if hasattr(model, "module") and hasattr(model, "merge_preds") else model
        load_checkpoint(target, checkpoint, map_location="cpu", revise_keys=REVISE_KEYS, logger="silent")
    return model.to(get_device()).eval()


def load_weights(model, checkpoint: str) -> None:
    """Swap another checkpoint of the same architecture into a built model (stability scoring)."""
    from mmengine.runner import load_checkpoint

    from selftrain.mm.loss_normalization import REVISE_KEYS

    target = model.module if hasattr(model, "merge_preds") else model
    load_checkpoint(target, checkpoint, map_location="cpu", revise_keys=REVISE_KEYS, logger="silent")


def predict(model, images: list[dict], pipeline: list[dict], batch_size: int,
            num_workers: int | None = None) -> Iterator[tuple[dict, object]]:
    """(image row, prediction) for every image, in batches; the image row's order is kept."""
    import torch
    from mmengine.dataset import Compose, pseudo_collate
    from mmengine.device import get_device

    if num_workers is None:
        # On a CPU the model already uses every core and decoding an image costs little next to
        # it; worker processes forked from a long-running flow process also died once here
        # (exit code 1, no trace). On a GPU, decoding in workers keeps the GPU fed.
        num_workers = min(4, os.cpu_count() or 1) if get_device() == "cuda" else 0
    loader = torch.utils.data.DataLoader(ImageList(images, Compose(pipeline)), batch_size=batch_size,
                                         num_workers=num_workers, collate_fn=pseudo_collate, shuffle=False)
    with torch.no_grad():
        for batch in loader:
            for pred in model.test_step(batch):
                yield images[pred.metainfo["img_id"]], pred
