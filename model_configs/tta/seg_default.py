# Segmentation pseudo masks (docs/design.md §3.2): the softmax is averaged over all views (scales x
# horizontal flip) at the original resolution; label = argmax; pixels whose max probability
# is below the threshold become the ignore label 255. Default scales as in Zoph et al.;
# ST++ uses (0.5, 0.75, 1.0, 1.5, 2.0). Scales, flip and threshold are flow parameters.
scales = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
flip = True
confidence_threshold = 0.5
