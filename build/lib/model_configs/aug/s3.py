# S3 (Zoph et al. 2020): AutoAugment + large scale jitter (0.5, 2.0).
policy = [dict(type="AutoAugment")]
scale_jitter = (0.5, 2.0)
flip_prob = 0.5
