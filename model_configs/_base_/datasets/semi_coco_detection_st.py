# ST / ST++ (Yang et al. 2022, §3.1 and the reference code's semi.py): the labeled set repeated
# to about the pseudo set's size, shuffled together with the pseudo-labeled images; weak
# augmentation on all, strong augmentation (model_configs/aug/strong.py) on the pseudo images.
_base_ = "./coco_detection.py"
train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type="ConcatDataset",
        # [labeled x times, pseudo]
        datasets=[dict(type="RepeatDataset", times=None, dataset={{_base_._coco}}), {{_base_._coco}}],
    ),
)
