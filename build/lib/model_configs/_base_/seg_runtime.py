# The training runtime of a segmentor (mmseg): the best checkpoint by validation mIoU.
_base_ = "./default_runtime.py"
default_scope = "mmseg"
default_hooks = dict(checkpoint=dict(save_best="mIoU", rule="greater"))  # dropped when there is no held-out set
visualizer = dict(type="SegLocalVisualizer", vis_backends=[dict(type="LocalVisBackend")], name="visualizer")
