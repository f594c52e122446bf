# Segmentation pipelines (mmseg transforms) of every stage. A run fills what is `None` here: the
# resize scale from the model config's `img_scale` (w, h) and the crop from its `crop_size`
# (h, w), the ratio range and flip probability from the augmentation preset (model_configs/aug/).
# Strings name where a list is spliced in: "{policy}" the preset's AutoAugment / RandAugment
# policy (mmdet's transforms with their `mmdet.` scope: geometric ops move the label map and
# fill what they uncover with 255, ignored), "{strong}" ST's strong augmentation
# (model_configs/aug/strong.py; pseudo-labeled images of an ST / ST++ student only), "{scales}"
# one Resize per TTA scale. A Zoph et al. student packs each source into its branch ("human" /
# "pseudo", mmdet's MultiBranch) instead of the last step. `selftrain config show` prints them.

_meta_keys = (
    "img_path",
    "seg_map_path",
    "ori_shape",
    "img_shape",
    "pad_shape",
    "scale_factor",
    "flip",
    "flip_direction",
    "reduce_zero_label",
    "load_error",
    "img_id",
)

# Teacher and students: resize around the model's image scale (as mmseg's own configs: (2048,
# 512) for VOC aug, (2049, 1025) for Cityscapes; ST++: the base size times 0.5 .. 2.0), then crop.
train_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadAnnotations"),
    "{policy}",
    dict(type="RandomResize", scale=None, ratio_range=None, keep_ratio=True),
    dict(type="RandomCrop", crop_size=None, cat_max_ratio=0.75),
    dict(type="RandomFlip", prob=None),
    "{strong}",
    dict(type="PackSegInputs"),
]

# Validation and test (mIoU). Without annotations the LoadAnnotations step is left out;
# inference loads with LoadImageOrMarkUnreadable.
test_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="Resize", scale=None, keep_ratio=True),
    dict(type="LoadAnnotations"),
    dict(type="PackSegInputs", meta_keys=_meta_keys),
]

# Pseudo-labeling views for ConfidentSegTTAModel: every TTA scale x the flip views (without
# `flip`, the unflipped view alone).
tta_flip_views = [
    dict(type="RandomFlip", prob=0.0, direction="horizontal"),
    dict(type="RandomFlip", prob=1.0, direction="horizontal"),
]
tta_pipeline = [
    dict(type="LoadImageOrMarkUnreadable"),
    dict(
        type="TestTimeAug",
        transforms=["{scales}", "{flips}", [dict(type="PackSegInputs", meta_keys=_meta_keys)]],
    ),
]
