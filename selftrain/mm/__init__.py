"""OpenMMLab extensions of selftrain; importing this package registers them in the registries:
mmdet (LossNormalizedDetector, DropEmptyBranchesDataPreprocessor), mmseg (PairListSegDataset,
ConfidentSegTTAModel) and mmcv's root transforms (LoadImageOrMarkUnreadable, ColorJitter,
GaussianBlur) and mmengine's hooks (ProgressHook).

In configs: ``custom_imports = dict(imports=['selftrain.mm'], allow_failed_imports=False)``.
"""

from selftrain.mm import (  # noqa: F401
    detection_autoaugment,
    fileio,
    loss_normalization,
    progress,
    segmentation,
    transforms,
)
