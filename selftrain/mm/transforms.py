"""Data transforms the pipeline needs beyond mmcv/mmdet's own."""

from __future__ import annotations

import numpy as np
from mmcv.transforms import LoadImageFromFile
from mmdet.registry import TRANSFORMS

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
