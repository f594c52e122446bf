# A segmentation student of Zoph et al. 2020: half human / half pseudo batches, loss normalisation,
# initialised from the teacher.
# The model, its input size, batch size and optimiser come from the model config the run names
# (model_configs/det|seg/); `selftrain config show` prints this stage resolved for a run.
_base_ = [
    "../_base_/seg_runtime.py",
    "../_base_/schedules/iter_cosine.py",
    "../_base_/datasets/semi_pair_list_seg_zoph.py",
    "../_base_/models/loss_normalized_segmentor.py",
]
