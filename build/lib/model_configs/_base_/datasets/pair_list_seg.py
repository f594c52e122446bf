# A segmentation set for training (a JSON list of image / label-map pairs: PairListSegDataset,
# selftrain/mm/segmentation.py), and the held-out set for validation (mIoU, mmseg IoUMetric).
# `None`: filled per run - the registered set's local pair list and classes, the pipelines,
# the model config's batch size.
_pairs = dict(
    type="PairListSegDataset",
    ann_file=None,
    data_root="",
    data_prefix=dict(),
    metainfo=dict(classes=None),
    reduce_zero_label=False,
    pipeline=None,
    test_mode=False,
    lazy_init=False,
)
train_dataloader = dict(
    batch_size=None,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type="InfiniteSampler", shuffle=True),
    dataset=_pairs,
)
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    drop_last=False,
    sampler=dict(type="DefaultSampler", shuffle=False),
    dataset=dict(_pairs, test_mode=True),
)
val_evaluator = dict(type="IoUMetric", iou_metrics=["mIoU"])
val_cfg = dict(type="ValLoop")
