# Detection test-time augmentation (docs/design.md §3.2). The views: scales (relative to the test size)
# x horizontal flip; the flow's tta_scales / tta_flip parameters override them. The merge, as mmdet's
# DetTTAModel does it: the boxes of all views, mapped back to the original image, merged by NMS.
scales = (1.0,)
flip = True
merge_nms_iou = 0.5
max_per_img = 300
