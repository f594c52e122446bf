# ST / ST++ strong augmentation (docs/design.md §3.4), on pseudo-labeled images only, after the weak
# one, with the values of the ST++ reference code (dataset/semi.py, dataset/transform.py):
# ColorJitter(0.5, 0.5, 0.5, 0.25) with p=0.8, RandomGrayscale p=0.2 with luma weights (torchvision's
# 0.299 R + 0.587 G + 0.114 B; mmcv images are BGR, hence the order below), Gaussian blur with sigma
# in [0.1, 2.0] p=0.5, and CutOut p=0.5: one hole of 2%..40% of the image, aspect 0.3..3.3, inside
# the image, filled with random values; a pseudo mask's pixels there are ignored (255).
_photometric = [
    dict(type="ColorJitter", brightness=0.5, contrast=0.5, saturation=0.5, hue=0.25, prob=0.8),
    dict(type="RandomGrayscale", prob=0.2, keep_channels=True, channel_weights=(0.114, 0.587, 0.299)),
    dict(type="GaussianBlur", sigma_range=(0.1, 2.0), prob=0.5),
]
_cutout = dict(type="RandomFillCutOut", prob=0.5, area_range=(0.02, 0.4), ratio_range=(0.3, 1 / 0.3), seg_fill=255)
det = _photometric + [_cutout]  # image only: boxes stay (an occlusion)
seg = _photometric + [_cutout]
