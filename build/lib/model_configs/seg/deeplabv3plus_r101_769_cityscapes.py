# DeepLabV3+ R101-D8 at 769x769 for Cityscapes (19 classes), as ST++ and mmseg's
# deeplabv3plus_r101-d8_4xb2-80k_cityscapes-769x769 train it; slide inference at test time.
_base_ = "mmseg::_base_/models/deeplabv3plus_r50-d8.py"

crop_size = (769, 769)
img_scale = (2049, 1025)
batch_size = 8
pretrained_backbone = None

model = dict(
    pretrained="open-mmlab://resnet101_v1c",
    backbone=dict(depth=101),
    data_preprocessor=dict(size=(769, 769)),
    decode_head=dict(num_classes=19, align_corners=True),
    auxiliary_head=dict(num_classes=19, align_corners=True),
    test_cfg=dict(mode="slide", crop_size=(769, 769), stride=(513, 513)),
)

optim_wrapper = dict(type="OptimWrapper", optimizer=dict(type="SGD", lr=0.01, momentum=0.9, weight_decay=5e-4))
warmup_iters = 0
