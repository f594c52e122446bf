# A detection teacher: the labeled set only, K evenly spaced checkpoints.
# The model, its input size, batch size and optimiser come from the model config the run names
# (model_configs/det|seg/); `selftrain config show` prints this stage resolved for a run.
_base_ = [
    "../_base_/det_runtime.py",
    "../_base_/schedules/iter_cosine.py",
    "../_base_/datasets/coco_detection.py",
]
