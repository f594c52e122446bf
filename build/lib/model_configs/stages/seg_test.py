# Evaluation of a segmentor on the held-out set: mIoU (mmseg IoUMetric).
_base_ = ["../_base_/test_runtime.py", "../_base_/datasets/pair_list_seg.py"]
default_scope = "mmseg"
visualizer = dict(type="SegLocalVisualizer", vis_backends=[dict(type="LocalVisBackend")], name="visualizer")
test_dataloader = {{_base_.val_dataloader}}
test_evaluator = {{_base_.val_evaluator}}
