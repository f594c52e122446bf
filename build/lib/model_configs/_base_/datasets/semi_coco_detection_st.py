# ST / ST++ (Yang et al. 2022, §3.1 and the reference code's semi.py): the labeled set repeated
# to about the pseudo set's size, shuffled together with the pseudo-labeled images; weak
# augmentation on all, strong augmentation (model_configs/aug/strong.py) on the pseudo images.
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
    dataset=dict(
        _delete_=True,
        type="ConcatDataset",
        datasets=[dict(type="RepeatDataset", times=None, dataset=_coco), _coco],  # [labeled x times, pseudo]
    ),
)
