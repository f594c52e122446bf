# ST / ST++ strong augmentation (docs/design.md §3.4), on pseudo-labeled images only, after the weak
# one: colour jitter p=0.8, grayscale p=0.2, Gaussian blur p=0.5, CutOut p=0.5 - the values
# of the ST++ reference (ColorJitter(0.5, 0.5, 0.5, 0.25), blur sigma in [0.1, 2.0]).
_photometric = [
    dict(type="ColorJitter", brightness=0.5, contrast=0.5, saturation=0.5, hue=0.25, prob=0.8),
    dict(type="RandomGrayscale", prob=0.2, keep_channels=True),
    dict(type="GaussianBlur", sigma_range=(0.1, 2.0), prob=0.5),
]
# One hole of 2% to 40% of the image area (side ratios), filled with black.
_cutout_ratio = [(0.15, 0.15), (0.3, 0.3), (0.45, 0.45), (0.6, 0.6), (0.3, 0.6), (0.6, 0.3)]
# Detection: mmdet's CutOut (image only; boxes stay, as in mmdet).
det = _photometric + [
    dict(type="RandomApply", prob=0.5, transforms=[dict(type="CutOut", n_holes=1, cutout_ratio=_cutout_ratio)])
]
# Segmentation: mmseg's RandomCutOut; the hole's pixels are ignored in the loss (255), as ST++ does.
seg = _photometric + [dict(type="RandomCutOut", prob=0.5, n_holes=1, cutout_ratio=_cutout_ratio, seg_fill_in=255)]
