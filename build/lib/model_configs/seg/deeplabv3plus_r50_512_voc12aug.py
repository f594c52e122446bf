# DeepLabV3+ R50-D8 at 512x512 for PASCAL VOC 2012 + SBD aug (21 classes); see the R101 file.
_base_ = "./deeplabv3plus_r101_512_voc12aug.py"

model = dict(pretrained="open-mmlab://resnet50_v1c", backbone=dict(depth=50))
