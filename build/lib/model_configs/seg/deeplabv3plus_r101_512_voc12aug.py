# DeepLabV3+ R101-D8 at 512x512 for PASCAL VOC 2012 (21 classes): the labeled set is VOC's
# train split (or one of ST++'s 92..1464-image partitions), the unlabeled pool is the SBD
# "aug" images; built on mmseg's own model definition. The pipeline builder adds data,
# schedule and hooks.
_base_ = "mmseg::_base_/models/deeplabv3plus_r50-d8.py"

crop_size = (512, 512)
img_scale = (2048, 512)
batch_size = 16
pretrained_backbone = None  # mmseg's init_cfg loads open-mmlab://resnet101_v1c (network or a local cache)

model = dict(
    pretrained="open-mmlab://resnet101_v1c",
    backbone=dict(depth=101),
    data_preprocessor=dict(size=(512, 512)),
    decode_head=dict(num_classes=21),
    auxiliary_head=dict(num_classes=21),
)

optim_wrapper = dict(type="OptimWrapper", optimizer=dict(type="SGD", lr=0.001, momentum=0.9, weight_decay=1e-4))
warmup_iters = 0
