# ST / ST++ for segmentation (Yang et al. 2022, §3.1; reference code semi.py): the labeled pairs
# repeated to about the pseudo set's size, shuffled together with the pseudo masks; weak
# augmentation on all, strong augmentation (model_configs/aug/strong.py) on the pseudo images.
_base_ = "./pair_list_seg.py"
train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type="ConcatDataset",
        datasets=[dict(type="RepeatDataset", times=None, dataset={{_base_._pairs}}), {{_base_._pairs}}],
    ),
)
