# The detection AutoAugment policy of Zoph et al. 2019 ("Learning Data Augmentation Strategies for
# Object Detection", arXiv:1906.11172), policy v0 - "the policy used for all of the results in the
# paper" - which Zoph et al. 2020 use in their S2 and S3 presets (§3.1, Appendix). mmdet's AutoAugment
# picks one sub-policy per image; each operation then applies with its probability.
#
# Values from the reference implementation (tensorflow/tpu, models/official/detection/utils/
# autoaugment_utils.py, policy_v0 and its level-to-argument maps; level L of 10): translate
# L/10 x 250 px, box-only translate L/10 x 120 px with each box taken with probability p/3, cutout
# half side L/10 x 100 px, shear coefficient L/10 x 0.3, rotation L/10 x 30 degrees, colour factor
# L/10 x 1.8 + 0.1, uncovered pixels 128; every sign drawn at random.
#
#   sub-policy                                   here
#   TranslateX_BBox p0.6 L4 (100 px)             TranslateXPixels (selftrain.mm.detection_autoaugment)
#   Equalize p0.8                                mmdet Equalize
#   TranslateY_Only_BBoxes p0.2 L2 (24 px)       BBoxOnlyTranslateY (selftrain), each box p 0.2/3
#   Cutout p0.8 L8 (half side 80 px)             CenteredCutOut (selftrain)
#   Sharpness p0.0 L8                            mmdet Sharpness (never applied: p 0)
#   ShearX_BBox p0.4 L0 (coefficient 0)          mmdet ShearX (the identity at level 0)
#   ShearY_BBox p1.0 L2 (coefficient 0.06)       mmdet ShearY at atan(0.06) = 3.43 degrees
#   TranslateY_Only_BBoxes p0.6 L6 (72 px)       BBoxOnlyTranslateY, each box p 0.6/3
#   Rotate_BBox p0.6 L10 (30 degrees)            mmdet Rotate
#   Color p1.0 L6 (factor 1.18)                  mmdet Color
#
# Where this differs: mmdet rounds its magnitudes to one decimal, so the shear is 3.4 degrees
# (coefficient 0.0594, reference 0.06) and the colour factor 1.2 (reference 1.18).
policies = [
    [dict(type="TranslateXPixels", prob=0.6, pixels=100), dict(type="Equalize", prob=0.8)],
    [
        dict(type="BBoxOnlyTranslateY", pixels=24, box_prob=0.2 / 3),
        dict(type="CenteredCutOut", prob=0.8, half_size=80),
    ],
    [dict(type="Sharpness", prob=0.0, level=8), dict(type="ShearX", prob=0.4, level=0)],
    [
        dict(type="ShearY", prob=1.0, level=10, min_mag=3.43, max_mag=3.43),
        dict(type="BBoxOnlyTranslateY", pixels=72, box_prob=0.6 / 3),
    ],
    [dict(type="Rotate", prob=0.6, level=10, min_mag=0.0, max_mag=30.0), dict(type="Color", prob=1.0, level=6)],
]
