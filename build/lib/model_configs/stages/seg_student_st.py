# A segmentation student of ST / ST++ (Yang et al. 2022): labeled set oversampled, strong augmentation
# on pseudo images, re-initialised.
# The model, its input size, batch size and optimiser come from the model config the run names
# (model_configs/det|seg/); `selftrain config show` prints this stage resolved for a run.
_base_ = [
    "../_base_/seg_runtime.py",
    "../_base_/schedules/iter_cosine.py",
    "../_base_/datasets/semi_pair_list_seg_st.py",
]
