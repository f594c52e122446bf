# RetinaNet R50-FPN at 640 px for COCO (80 classes), the real-sized detection config.
# Built on mmdet's own model definition; the pipeline builder adds data, schedule and hooks.
_base_ = "mmdet::_base_/models/retinanet_r50_fpn.py"

img_scale = (640, 640)
batch_size = 8
pretrained_backbone = None  # mmdet's init_cfg loads torchvision://resnet50 (needs network or a local cache)

model = dict(bbox_head=dict(num_classes=80), test_cfg=dict(score_thr=0.05, max_per_img=100))

optim_wrapper = dict(type="OptimWrapper", optimizer=dict(type="SGD", lr=0.01, momentum=0.9, weight_decay=0.0001))
warmup_iters = 500
