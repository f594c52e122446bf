# ST / ST++ weak augmentation (docs/design.md §3.4), on every image: horizontal flip, resize with a
# ratio in (0.5, 2.0), crop to the model's input size.
policy = []
scale_jitter = (0.5, 2.0)
flip_prob = 0.5
