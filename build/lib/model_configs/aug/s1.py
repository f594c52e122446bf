# S1 (Zoph et al. 2020): horizontal flip + scale jitter (0.8, 1.2).
policy = []
scale_jitter = (0.8, 1.2)
flip_prob = 0.5
