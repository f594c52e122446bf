"""OpenMMLab extensions of selftrain; importing this package registers them in mmdet's MODELS.

In configs: ``custom_imports = dict(imports=['selftrain.mm'], allow_failed_imports=False)``.
"""

from selftrain.mm import transforms  # noqa: F401  (registers LoadImageOrMarkUnreadable)
from selftrain.mm.loss_normalization import (
    EMA,
    EMA_BUFFERS,
    REVISE_KEYS,
    DropEmptyBranchesDataPreprocessor,
    LossNormalizedDetector,
    ema_update,
    normalized_loss,
    plain_detector_state_dict,
    total_loss,
)

__all__ = [
    "EMA",
    "EMA_BUFFERS",
    "REVISE_KEYS",
    "DropEmptyBranchesDataPreprocessor",
    "LossNormalizedDetector",
    "ema_update",
    "normalized_loss",
    "plain_detector_state_dict",
    "total_loss",
]
