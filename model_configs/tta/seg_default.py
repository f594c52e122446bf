# Segmentation test-time augmentation (docs/design.md §3.2). The views: scales (relative to the test size)
# x horizontal flip, each method's paper's by default - Zoph et al. 2020 (PASCAL): 0.5 .. 1.75 in steps
# of 0.25; ST / ST++ (reference label.py): 0.5, 0.75, 1.0, 1.5, 2.0; the flow's tta_scales / tta_flip
# parameters override them. The merge (ConfidentSegTTAModel): the softmax is averaged over all views at
# the original resolution; label = argmax; the method's confidence threshold turns less confident pixels
# into the ignore label 255 (none for st / st++).
scales = dict(zoph=(0.5, 0.75, 1.0, 1.25, 1.5, 1.75), st=(0.5, 0.75, 1.0, 1.5, 2.0))
flip = True
