"""Data transforms the pipeline needs beyond mmcv/mmdet/mmseg's own.

Registered in mmcv's root TRANSFORMS registry, so configs in the mmdet and the mmseg scope
both find them.
"""

from __future__ import annotations

import cv2
import mmcv
import numpy as np
from mmcv.transforms import BaseTransform, LoadImageFromFile
from mmcv.transforms.utils import cache_randomness
from mmengine.registry import TRANSFORMS

PLACEHOLDER_SIZE = 32


@TRANSFORMS.register_module()
class LoadImageOrMarkUnreadable(LoadImageFromFile):
    """mmcv's LoadImageFromFile, except that an unreadable image does not stop the batch.

    Pseudo labelling must never lose a shard to one corrupt, empty or missing file
    (DESIGN 2.2): the image is replaced by a small black placeholder and
    ``results['load_error']`` names the reason, so the caller records it as skipped and
    discards whatever the model predicted for the placeholder. 16-bit, grayscale and RGBA
    images are read as 8-bit 3-channel by mmcv's decoder ('color' flag) and are not errors.
    """

    def transform(self, results: dict) -> dict:
        error = None
        try:
            out = super().transform(dict(results))
            if out is None or out.get("img") is None:
                error = "cannot decode the image"
            else:
                out["load_error"] = ""
                return out
        except Exception as exc:  # noqa: BLE001 - any failure to read is reported, not raised
            error = f"{type(exc).__name__}: {exc}"[:300]
        img = np.zeros((PLACEHOLDER_SIZE, PLACEHOLDER_SIZE, 3), dtype=np.uint8)
        results.update(img=img, img_shape=img.shape[:2], ori_shape=img.shape[:2], load_error=error or "unknown")
        return results


def shift_hue(img: np.ndarray, factor: float) -> np.ndarray:
    """Rotate the hue of a BGR uint8 image by ``factor`` of the colour circle (torchvision's
    adjust_hue). mmcv.adjust_hue overflows on negative factors with numpy 2."""
    hsv = cv2.cvtColor(np.ascontiguousarray(img, dtype=np.uint8), cv2.COLOR_BGR2HSV)
    hsv[..., 0] = ((hsv[..., 0].astype(np.int16) + int(round(factor * 180))) % 180).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)


@TRANSFORMS.register_module()
class ColorJitter(BaseTransform):
    """Colour jitter with torchvision's semantics, as ST++'s strong augmentation uses it
    (``ColorJitter(0.5, 0.5, 0.5, 0.25)`` applied with p=0.8, DESIGN 2.4).

    Brightness, contrast and saturation factors are drawn from [1 - x, 1 + x], the hue shift
    from [-hue, hue] (fraction of the colour circle); the four are applied in a random order
    with mmcv's image operations. Image only: labels, boxes and masks are untouched. The
    probability is ``prob`` (wrap nothing around it).
    """

    def __init__(self, brightness: float = 0.5, contrast: float = 0.5, saturation: float = 0.5,
                 hue: float = 0.25, prob: float = 0.8):
        if not 0.0 <= hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5], got {hue}")
        self.brightness, self.contrast, self.saturation, self.hue, self.prob = (
            brightness, contrast, saturation, hue, prob)

    @cache_randomness
    def _params(self):
        if np.random.rand() >= self.prob:
            return None
        factors = [np.random.uniform(max(0.0, 1 - v), 1 + v) for v in
                   (self.brightness, self.contrast, self.saturation)]
        return np.random.permutation(4), factors, np.random.uniform(-self.hue, self.hue)

    def transform(self, results: dict) -> dict:
        params = self._params()
        if params is None:
            return results
        order, (b, c, s), h = params
        img = results["img"]
        for op in order:
            if op == 0:
                img = mmcv.adjust_brightness(img, b)
            elif op == 1:
                img = mmcv.adjust_contrast(img, c)
            elif op == 2:
                img = mmcv.adjust_color(img, s)
            else:
                img = shift_hue(img, h)
        results["img"] = np.clip(img, 0, 255).astype(np.uint8)
        return results


@TRANSFORMS.register_module()
class GaussianBlur(BaseTransform):
    """Gaussian blur with sigma drawn from ``sigma_range`` with probability ``prob``
    (ST++: sigma in [0.1, 2.0], p=0.5). Image only."""

    def __init__(self, sigma_range: tuple[float, float] = (0.1, 2.0), prob: float = 0.5):
        self.sigma_range, self.prob = tuple(sigma_range), prob

    @cache_randomness
    def _sigma(self):
        return np.random.uniform(*self.sigma_range) if np.random.rand() < self.prob else None

    def transform(self, results: dict) -> dict:
        sigma = self._sigma()
        if sigma is not None:
            results["img"] = cv2.GaussianBlur(results["img"], (0, 0), sigmaX=sigma, sigmaY=sigma)
        return results
