# The training runtime of a detector (mmdet): the best checkpoint by validation COCO bbox mAP.
_base_ = "./default_runtime.py"
default_scope = "mmdet"
default_hooks = dict(
    checkpoint=dict(save_best="coco/bbox_mAP", rule="greater"),  # dropped when there is no held-out set
    visualization=dict(type="DetVisualizationHook", draw=False),
)
visualizer = dict(type="DetLocalVisualizer", vis_backends=[dict(type="LocalVisBackend")], name="visualizer")
