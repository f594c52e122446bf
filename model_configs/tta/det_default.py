# Detection test-time augmentation merging (docs/design.md §3.2), as mmdet's DetTTAModel does: the boxes
# of all views, mapped back to the original image, are merged by NMS. The views themselves
# (scales x horizontal flip; default scale 1.0 + flip) are flow parameters (tta_scales, tta_flip).
merge_nms_iou = 0.5
max_per_img = 300
