# Zoph et al. 2020 for segmentation (§4.2): every batch half human-labeled, half pseudo-labeled
# images - mmdet's MultiSourceSampler (source_ratio [1, 1]) over a ConcatDataset of the labeled
# pairs and the pseudo masks (pixels under 0.5 confidence ignored). Each source's pipeline packs
# into its own branch ("human" / "pseudo") so that the loss-normalised student
# (model_configs/_base_/models/loss_normalized_segmentor.py) computes the two losses apart.
_base_ = "./pair_list_seg.py"
train_dataloader = dict(
    sampler=dict(_delete_=True, type="mmdet.MultiSourceSampler", batch_size=None, source_ratio=[1, 1], shuffle=True),
    dataset=dict(
        _delete_=True, type="ConcatDataset", datasets=[{{_base_._pairs}}, {{_base_._pairs}}]
    ),  # [labeled, pseudo]
)
