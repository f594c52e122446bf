"""OpenMMLab extensions of selftrain; importing this package registers them in mmdet's registries
(LossNormalizedDetector, DropEmptyBranchesDataPreprocessor, LoadImageOrMarkUnreadable).

In configs: ``custom_imports = dict(imports=['selftrain.mm'], allow_failed_imports=False)``.
"""

from selftrain.mm import fileio, loss_normalization, transforms  # noqa: F401
