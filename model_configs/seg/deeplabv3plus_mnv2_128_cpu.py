# DeepLabV3+ with a MobileNetV2 backbone (output stride 8) on 128-px crops: the CPU config of
# the segmentation demo and tests. The pipeline builder (selftrain/mm/configs/) adds
# datasets, pipelines, schedule and hooks; this file holds only the model and its input size.
# num_classes is set from the registered labeled set (background included).
crop_size = (128, 128)  # training crop (h, w)
img_scale = (128, 128)  # test-time resize target (w, h), keep_ratio
batch_size = 8
pretrained_backbone = "mobilenet_v2_imagenet"  # offline torchvision weights, see selftrain/mm/pretrained.py

model = dict(
    type="EncoderDecoder",
    data_preprocessor=dict(
        type="SegDataPreProcessor",
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_val=0,
        seg_pad_val=255,
        size_divisor=32,
    ),
    backbone=dict(
        type="MobileNetV2",
        widen_factor=1.0,
        strides=(1, 2, 2, 1, 1, 1, 1),
        dilations=(1, 1, 1, 2, 2, 4, 4),
        out_indices=(1, 2, 4, 6),  # 24, 32, 96, 320 channels; stride 4, 8, 8, 8
        norm_cfg=dict(type="BN", requires_grad=True),
        norm_eval=False,
    ),
    decode_head=dict(
        type="DepthwiseSeparableASPPHead",
        in_channels=320,
        in_index=3,
        channels=64,
        dilations=(1, 6, 12, 18),
        c1_in_channels=24,
        c1_channels=12,
        dropout_ratio=0.1,
        num_classes=2,
        norm_cfg=dict(type="BN", requires_grad=True),
        align_corners=False,
        loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0, avg_non_ignore=True),
    ),
    train_cfg=dict(),
    test_cfg=dict(mode="whole"),
)

optim_wrapper = dict(
    type="OptimWrapper",
    optimizer=dict(type="AdamW", lr=1e-3, weight_decay=1e-4),
    clip_grad=dict(max_norm=10, norm_type=2),
)
warmup_iters = 30
