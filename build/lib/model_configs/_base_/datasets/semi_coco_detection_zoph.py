# Zoph et al. 2020 (§3.2, Appendix B): every batch half human-labeled, half pseudo-labeled
# images - mmdet's MultiSourceSampler (source_ratio [1, 1]) over a ConcatDataset of the labeled
# set and the pseudo boxes (a COCO file written from the pseudo-label shards). Each source's
# pipeline packs into its own branch ("human" / "pseudo") so that the loss-normalised student
# (model_configs/_base_/models/loss_normalized_detector.py) computes the two losses apart.
_base_ = "./coco_detection.py"
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
    sampler=dict(_delete_=True, type="MultiSourceSampler", batch_size=None, source_ratio=[1, 1], shuffle=True),
    dataset=dict(_delete_=True, type="ConcatDataset", datasets=[_coco, _coco]),  # [labeled, pseudo]
)
