"""The three operations of the detection AutoAugment policy (Zoph et al. 2019, "Learning Data
Augmentation Strategies for Object Detection", policy v0) that mmdet does not have as the
policy defines them. The policy itself is a config file (model_configs/aug/zoph2019_det_v0.py);
its other operations are mmdet's (Equalize, Sharpness, ShearX / ShearY, Rotate, Color).

Reference implementation: tensorflow/tpu, models/official/detection/utils/autoaugment_utils.py
(``translate_bbox``, ``translate_y_only_bboxes``, ``cutout``). Each acts on the image at its
decoded size, before any resize, as there; uncovered pixels get 128.

Registered in mmdet's TRANSFORMS registry (a segmentation pipeline names them ``mmdet.X``).
"""

from __future__ import annotations

import numpy as np
from mmcv.transforms import BaseTransform
from mmcv.transforms.utils import cache_randomness
from mmdet.datasets.transforms import TranslateX
from mmdet.registry import TRANSFORMS


@TRANSFORMS.register_module()
class TranslateXPixels(TranslateX):
    """mmdet's TranslateX by a fixed number of pixels (the reference's ``TranslateX_BBox``),
    where mmdet's takes a fraction of the width rounded to 0.1.

    With probability ``prob`` the image (H, W, C), its boxes, masks and label map move
    ``pixels`` (>= 0) to the right or, with probability 1 - ``reversal_prob``, to the left;
    boxes are clipped to the image, uncovered pixels get ``img_border_value`` (128) and a label
    map's get ``seg_ignore_label`` (255)."""

    def __init__(self, pixels: int, prob: float = 1.0, reversal_prob: float = 0.5, **kwargs) -> None:
        if pixels < 0:
            raise ValueError(f"pixels must be >= 0, got {pixels}")
        super().__init__(prob=prob, level=None, min_mag=0.0, max_mag=1.0, reversal_prob=reversal_prob, **kwargs)
        self.pixels = int(pixels)
        self._width = 1

    def transform(self, results: dict) -> dict:
        self._width = max(int(results["img_shape"][1]), 1)
        return super().transform(results)

    @cache_randomness
    def _get_mag(self) -> float:
        # mmdet moves by int(width * mag) pixels: the half pixel keeps that int() at ``pixels``
        mag = (self.pixels + 0.5) / self._width
        return -mag if np.random.rand() > self.reversal_prob else mag

    def __repr__(self) -> str:
        return f"{type(self).__name__}(pixels={self.pixels}, prob={self.prob}, reversal_prob={self.reversal_prob})"


@TRANSFORMS.register_module()
class BBoxOnlyTranslateY(BaseTransform):
    """Moves the content inside boxes up or down, boxes unchanged (the reference's
    ``TranslateY_Only_BBoxes``).

    One sign is drawn per image (+ or - ``pixels``, each with probability 1/2); then each box,
    in random order, with probability ``box_prob`` (the reference takes the sub-policy's
    probability / 3) has its pixel region - rows int(y1)..min(int(y2), H - 1) and columns
    int(x1)..min(int(x2), W - 1), inclusive - shifted vertically by that many pixels, what
    it uncovers filled with ``fill``. Modifies ``img`` (H, W[, C]); boxes, masks and a label
    map are untouched (an image without boxes - segmentation - is returned as it is)."""

    def __init__(self, pixels: int, box_prob: float, fill: int = 128) -> None:
        if pixels < 0 or not 0.0 <= box_prob <= 1.0:
            raise ValueError(f"pixels must be >= 0 and box_prob in [0, 1], got {pixels}, {box_prob}")
        self.pixels, self.box_prob, self.fill = int(pixels), float(box_prob), fill

    @cache_randomness
    def _draw(self, n: int) -> tuple[int, list[int]]:
        shift = self.pixels if np.random.rand() < 0.5 else -self.pixels
        order = np.random.permutation(n)
        return shift, [int(i) for i in order if np.random.rand() < self.box_prob]

    def transform(self, results: dict) -> dict:
        boxes = results.get("gt_bboxes")
        if boxes is None or len(boxes) == 0:
            return results
        xyxy = boxes.numpy() if hasattr(boxes, "numpy") else np.asarray(boxes, dtype=np.float64)
        shift, chosen = self._draw(len(xyxy))
        if not chosen or shift == 0:
            return results
        img = results["img"].copy()
        h, w = img.shape[:2]
        for i in chosen:
            x1, y1 = max(int(xyxy[i][0]), 0), max(int(xyxy[i][1]), 0)
            x2, y2 = min(int(xyxy[i][2]), w - 1), min(int(xyxy[i][3]), h - 1)
            if x2 < x1 or y2 < y1:
                continue
            region = img[y1 : y2 + 1, x1 : x2 + 1]
            moved = np.full_like(region, self.fill)
            n = abs(shift)
            if n < region.shape[0]:
                if shift > 0:
                    moved[n:] = region[:-n]
                else:
                    moved[:-n] = region[n:]
            img[y1 : y2 + 1, x1 : x2 + 1] = moved
        results["img"] = img
        return results

    def __repr__(self) -> str:
        return f"{type(self).__name__}(pixels={self.pixels}, box_prob={self.box_prob}, fill={self.fill})"


@TRANSFORMS.register_module()
class CenteredCutOut(BaseTransform):
    """One square hole centred on a uniformly drawn pixel, clipped at the border (the
    reference's ``Cutout``; mmdet's CutOut draws the top-left corner instead, so its holes
    are never clipped on the top and left).

    With probability ``prob``: a centre (cy, cx) uniform over the image's pixels, the hole
    rows max(0, cy - half_size)..min(H, cy + half_size) - 1 and likewise the columns, filled
    with ``fill``. Modifies ``img`` (H, W[, C]) only: boxes stay (an occlusion), a label map
    keeps its labels."""

    def __init__(self, half_size: int, prob: float = 1.0, fill: int = 128) -> None:
        if half_size < 0 or not 0.0 <= prob <= 1.0:
            raise ValueError(f"half_size must be >= 0 and prob in [0, 1], got {half_size}, {prob}")
        self.half_size, self.prob, self.fill = int(half_size), float(prob), fill

    @cache_randomness
    def _centre(self, h: int, w: int) -> tuple[int, int] | None:
        if np.random.rand() >= self.prob:
            return None
        return int(np.random.randint(0, h)), int(np.random.randint(0, w))

    def transform(self, results: dict) -> dict:
        img = results["img"]
        h, w = img.shape[:2]
        centre = self._centre(h, w)
        if centre is None or self.half_size == 0:
            return results
        cy, cx = centre
        img = img.copy()
        img[
            max(0, cy - self.half_size) : min(h, cy + self.half_size),
            max(0, cx - self.half_size) : min(w, cx + self.half_size),
        ] = self.fill
        results["img"] = img
        return results

    def __repr__(self) -> str:
        return f"{type(self).__name__}(half_size={self.half_size}, prob={self.prob}, fill={self.fill})"
