# RetinaNet with a MobileNetV2 backbone on 256-px tiles: the CPU config of the demo and tests.
# The pipeline builder (selftrain/mm/configs/) adds datasets, pipelines, schedule and hooks;
# this file holds only what is specific to the model and its input size.
img_scale = (256, 256)  # training crop / test resize (w, h)
batch_size = 4
pretrained_backbone = "mobilenet_v2_imagenet"  # offline torchvision weights, see selftrain/mm/pretrained.py

model = dict(
    type="RetinaNet",
    data_preprocessor=dict(
        type="DetDataPreprocessor",
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_size_divisor=32,
    ),
    backbone=dict(
        type="MobileNetV2",
        widen_factor=1.0,
        out_indices=(2, 4, 6),  # strides 8, 16, 32; 32, 96, 320 channels
        norm_cfg=dict(type="BN", requires_grad=True),
        norm_eval=False,
    ),
    neck=dict(
        type="FPN", in_channels=[32, 96, 320], out_channels=64, start_level=0, add_extra_convs="on_output", num_outs=3
    ),
    bbox_head=dict(
        type="RetinaHead",
        num_classes=1,
        in_channels=64,
        stacked_convs=2,
        feat_channels=64,
        anchor_generator=dict(
            type="AnchorGenerator",
            octave_base_scale=2,  # 16-25 px anchors at stride 8: small tree crowns
            scales_per_octave=3,
            ratios=[0.5, 1.0, 2.0],
            strides=[8, 16, 32],
        ),
        bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0, 0.0, 0.0, 0.0], target_stds=[1.0, 1.0, 1.0, 1.0]),
        loss_cls=dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
        loss_bbox=dict(type="L1Loss", loss_weight=1.0),
    ),
    train_cfg=dict(
        assigner=dict(type="MaxIoUAssigner", pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0, ignore_iof_thr=-1),
        sampler=dict(type="PseudoSampler"),
        allowed_border=-1,
        pos_weight=-1,
        debug=False,
    ),
    test_cfg=dict(
        nms_pre=1000, min_bbox_size=0, score_thr=0.05, nms=dict(type="nms", iou_threshold=0.5), max_per_img=300
    ),
)

# AdamW with warm-up: measured on this data, SGD lr 0.01 gave a useless teacher.
optim_wrapper = dict(
    type="OptimWrapper",
    optimizer=dict(type="AdamW", lr=3e-4, weight_decay=1e-4),
    clip_grad=dict(max_norm=10, norm_type=2),
)
warmup_iters = 50
