# Detection pipelines (mmdet transforms) of every stage. A run fills what is `None` here: the
# resize scale and crop size from the model config's `img_scale` (w, h), the ratio range and
# flip probability from the augmentation preset (model_configs/aug/). Strings name where a list
# is spliced in: "{policy}" the preset's AutoAugment / RandAugment policy (empty for S1 and
# ST's weak augmentation), "{strong}" ST's strong augmentation (model_configs/aug/strong.py;
# pseudo-labeled images of an ST / ST++ student only, empty otherwise), "{scales}" one Resize per
# TTA scale. A Zoph et al. student packs each source into its branch ("human" / "pseudo",
# mmdet's MultiBranch) instead of the last step. `selftrain config show` prints them filled.

# Teacher and students (Zoph et al. 2020 §3.1: scale jitter, crop, flip; S2..S4 add a policy).
train_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadAnnotations", with_bbox=True),
    "{policy}",
    dict(type="RandomResize", scale=None, ratio_range=None, keep_ratio=True),
    dict(type="RandomCrop", crop_size=None, allow_negative_crop=False),
    dict(type="FilterAnnotations", min_gt_bbox_wh=(1, 1), keep_empty=False),
    dict(type="RandomFlip", prob=None),
    "{strong}",
    dict(type="PackDetInputs"),
]

# Validation and test (COCO bbox metrics). Without annotations (an unlabeled image) the
# LoadAnnotations step is left out; inference loads with LoadImageOrMarkUnreadable, which marks
# an image that cannot be decoded instead of failing the batch.
test_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="Resize", scale=None, keep_ratio=True),
    dict(type="LoadAnnotations", with_bbox=True),
    dict(
        type="PackDetInputs",
        meta_keys=("img_id", "img_path", "ori_shape", "img_shape", "scale_factor", "load_error"),
    ),
]

# Pseudo-labeling views for mmdet's DetTTAModel: every TTA scale (relative to the test size) x
# the flip views (without `flip`, the unflipped view alone).
tta_flip_views = [dict(type="RandomFlip", prob=1.0), dict(type="RandomFlip", prob=0.0)]
tta_pipeline = [
    dict(type="LoadImageOrMarkUnreadable"),
    dict(
        type="TestTimeAug",
        transforms=[
            "{scales}",
            "{flips}",
            [
                dict(
                    type="PackDetInputs",
                    meta_keys=(
                        "img_id",
                        "img_path",
                        "ori_shape",
                        "img_shape",
                        "scale_factor",
                        "flip",
                        "flip_direction",
                        "load_error",
                    ),
                )
            ],
        ],
    ),
]
