# A COCO detection set for training, and the held-out set for validation (COCO bbox metrics,
# mmdet CocoMetric / pycocotools). `None`: filled per run - the registered set's local copy
# (ann_file, image folder, classes), the pipelines (model_configs/aug/ presets at the model
# config's input size) and the model config's batch size.
_coco = dict(
    type="CocoDataset",
    data_root="",
    ann_file=None,
    data_prefix=dict(img=None),
    metainfo=dict(classes=None),
    filter_cfg=dict(filter_empty_gt=True, min_size=1),
    pipeline=None,
    test_mode=False,
    backend_args=None,
)
train_dataloader = dict(
    batch_size=None,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type="InfiniteSampler", shuffle=True),
    dataset=_coco,
)
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    drop_last=False,
    sampler=dict(type="DefaultSampler", shuffle=False),
    dataset=dict(_coco, filter_cfg=None, test_mode=True),
)
val_evaluator = dict(type="CocoMetric", ann_file=None, metric="bbox", format_only=False, backend_args=None)
val_cfg = dict(type="ValLoop")
