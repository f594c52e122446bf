# ST / ST++ strong augmentation without the hue jitter: not the papers' recipe (a flow's
# `strong_aug="strong_no_hue"`, non-default). strong.py's values otherwise (the ST++ reference code,
# dataset/transform.py), with ColorJitter's hue at 0 instead of 0.25. For data whose classes are told
# apart by colour: a hue shift of up to a quarter of the colour circle turns a red apple into a green
# or blue one, and the label no longer fits the image. On the segmentation demo (bird / flower /
# fruit) the hue jitter costs an ST student 0.10 mIoU even with ground-truth masks (README, Quality).
_photometric = [
    dict(type="ColorJitter", brightness=0.5, contrast=0.5, saturation=0.5, hue=0.0, prob=0.8),
    dict(type="RandomGrayscale", prob=0.2, keep_channels=True, channel_weights=(0.114, 0.587, 0.299)),
    dict(type="GaussianBlur", sigma_range=(0.1, 2.0), prob=0.5),
]
_cutout = dict(type="RandomFillCutOut", prob=0.5, area_range=(0.02, 0.4), ratio_range=(0.3, 1 / 0.3), seg_fill=255)
det = _photometric + [_cutout]  # image only: boxes stay (an occlusion)
seg = _photometric + [_cutout]
