# Segmentation test-time augmentation (docs/design.md §3.2). The views: scales (relative to the test size)
# x horizontal flip, the scales of Zoph et al. 2020 (PASCAL: 0.5 .. 1.75); the flow's tta_scales /
# tta_flip parameters override them (ST++ uses 0.5, 0.75, 1.0, 1.5, 2.0). The merge
# (ConfidentSegTTAModel): the softmax is averaged over all views at the original resolution;
# label = argmax; the flow's confidence threshold turns less confident pixels into the ignore label 255.
scales = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
flip = True
