# Detection test-time augmentation (DESIGN 2.2): scales x horizontal flip, merged like mmdet's
# DetTTAModel (NMS over the union of the views' boxes). Default: scale 1.0 + flip.
scales = [1.0]
flip = True
merge_nms_iou = 0.5
max_per_img = 300
