# Zoph et al. 2020 (§3.2, Appendix B): every batch half human-labeled, half pseudo-labeled
# images - mmdet's MultiSourceSampler (source_ratio [1, 1]) over a ConcatDataset of the labeled
# set and the pseudo boxes (a COCO file written from the pseudo-label shards). Each source's
# pipeline packs into its own branch ("human" / "pseudo") so that the loss-normalised student
# (model_configs/_base_/models/loss_normalized_detector.py) computes the two losses apart.
_base_ = "./coco_detection.py"
train_dataloader = dict(
    sampler=dict(_delete_=True, type="MultiSourceSampler", batch_size=None, source_ratio=[1, 1], shuffle=True),
    # [labeled, pseudo]
    dataset=dict(_delete_=True, type="ConcatDataset", datasets=[{{_base_._coco}}, {{_base_._coco}}]),
)
