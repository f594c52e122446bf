"""mmseg extensions: a dataset over an explicit list of (image, label map) pairs, and the
segmentation TTA merge with the confidence rule of docs/design.md §3.2.

Registered in mmseg's registries on import (``custom_imports = ['selftrain.mm']``).
"""

from __future__ import annotations

import json
from typing import Any

import torch
from mmengine.structures import PixelData
from mmseg.datasets import BaseSegDataset
from mmseg.models.segmentors.seg_tta import SegTTAModel
from mmseg.registry import DATASETS, MODELS

from selftrain.mm.loss_normalization import LossNormalizedDetector
from storage.masks import IGNORE_LABEL


@DATASETS.register_module()
class PairListSegDataset(BaseSegDataset):
    """mmseg dataset whose ``ann_file`` is a JSON list of ``{"img_path", "seg_map_path"}``
    (any URL mmengine's file backends read: local paths, s3:// through selftrain.mm.fileio).

    Registered sets, pseudo-mask sets and unlabeled lists all have images named one by one
    (they may live under different prefixes), which mmseg's directory-scanning datasets
    cannot express. ``seg_map_path`` may be omitted for inference-only lists; a pair's
    ``label_map`` ({stored value: class index}) is applied when its label map is loaded.
    """

    def load_data_list(self) -> list[dict]:
        with open(self.ann_file) as f:
            pairs = json.load(f)
        data = []
        for p in pairs:
            # A registered set's own mapping of stored values to class indices (e.g. {255: 1} for
            # binary masks stored as 0/255) is applied by mmseg's LoadAnnotations.
            label_map = {int(k): int(v) for k, v in p["label_map"].items()} if p.get("label_map") else self.label_map
            item = dict(
                img_path=p["img_path"], label_map=label_map, reduce_zero_label=self.reduce_zero_label, seg_fields=[]
            )
            if p.get("seg_map_path"):
                item["seg_map_path"] = p["seg_map_path"]
            if "image_id" in p:
                item["image_id"] = p["image_id"]
            data.append(item)
        return data


@MODELS.register_module()
class ConfidentSegTTAModel(SegTTAModel):
    """mmseg's SegTTAModel, plus the pseudo-mask confidence rule (docs/design.md §3.2).

    The softmax of every view (scales x flip; the segmentor returns each view's logits at
    the original resolution, flips undone) is averaged; label = argmax; pixels whose max
    probability is below ``confidence_threshold`` get the ignore label 255. The averaged max
    probability is kept as ``seg_confidence`` for per-image statistics. (SegTTAModel itself
    returns only the argmax.)
    """

    def __init__(self, *args, confidence_threshold: float = 0.5, **kwargs):
        super().__init__(*args, **kwargs)
        if not 0.0 <= confidence_threshold <= 1.0:
            raise ValueError(f"confidence_threshold must be in [0, 1], got {confidence_threshold}")
        self.confidence_threshold = confidence_threshold

    def merge_preds(self, data_samples_list):
        merged = []
        for views in data_samples_list:
            probs = torch.stack([v.seg_logits.data.softmax(dim=0) for v in views]).mean(dim=0)
            sample = views[0]
            confidence, label = probs.max(dim=0)
            label = torch.where(confidence >= self.confidence_threshold, label, torch.full_like(label, IGNORE_LABEL))
            sample.set_data(
                {"pred_sem_seg": PixelData(data=label[None]), "seg_confidence": PixelData(data=confidence[None])}
            )
            merged.append(sample)
        return merged


@MODELS.register_module()
class LossNormalizedSegmentor(LossNormalizedDetector):
    """Zoph et al. (2020)'s student for semantic segmentation: the same loss normalisation,
    ``L = 1/(1+a) * (Lh + a * EMA(Lh)/EMA(Lp) * Lp)`` (selftrain/mm/loss_normalization.py),
    around any mmseg segmentor (``detector``: its config, e.g. an EncoderDecoder).

    The paper's PASCAL experiments (§4.2 and Appendix B) use this recipe for segmentation as
    for detection: half human / half pseudo-labeled batches, pseudo masks whose pixels under
    0.5 confidence are ignored (255, mmseg's ignore index). Batches come from mmdet's
    ``MultiBranch`` packing (``PackSegInputs`` per branch) and
    ``DropEmptyBranchesDataPreprocessor`` around the segmentor's ``SegDataPreProcessor``.
    Prediction and validation delegate to the segmentor (``pred_sem_seg``)."""

    def predict(self, batch_inputs, batch_data_samples=None, rescale: bool = True):
        segmentor: Any = self.detector  # an mmseg segmentor: predict(inputs, data_samples)
        return segmentor.predict(batch_inputs, batch_data_samples)
