# S4 (Zoph et al. 2020): RandAugment at magnitude 10 (two ops per image) + scale jitter (0.5, 2.0).
_ops = [
    "AutoContrast",
    "Equalize",
    "Invert",
    "Rotate",
    "Posterize",
    "Solarize",
    "SolarizeAdd",
    "Color",
    "Contrast",
    "Brightness",
    "Sharpness",
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
]
policy = [dict(type="RandAugment", aug_num=2, aug_space=[[dict(type=op, level=10)] for op in _ops])]
scale_jitter = (0.5, 2.0)
flip_prob = 0.5
