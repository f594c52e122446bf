# Evaluation of a detector on the held-out set: COCO bbox metrics (mmdet CocoMetric / pycocotools).
_base_ = ["../_base_/test_runtime.py", "../_base_/datasets/coco_detection.py"]
default_scope = "mmdet"
visualizer = dict(type="DetLocalVisualizer", vis_backends=[dict(type="LocalVisBackend")], name="visualizer")
test_dataloader = {{_base_.val_dataloader}}
test_evaluator = {{_base_.val_evaluator}}
