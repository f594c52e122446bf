# S2 (Zoph et al. 2020): AutoAugment (mmdet's policies v0) + S1.
policy = [dict(type="AutoAugment")]
scale_jitter = (0.8, 1.2)
flip_prob = 0.5
