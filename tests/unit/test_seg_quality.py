"""The report's pseudo-mask quality against ground truth (selftrain.diagnostics.seg_quality),
against values computed by hand."""

import numpy as np
import pytest

from selftrain.diagnostics import seg_quality


def test_mask_quality_leaves_out_ignored_unknown_and_mismatched_pixels_and_counts_them():
    pseudo = np.array([[0, 0, 1, 255], [1, 1, 2, 2]], dtype=np.uint8)
    gt = np.array([[0, 1, 1, 1], [255, 7, 2, 2]], dtype=np.uint8)  # 7: no class of 3
    wrong_size = (np.zeros((3, 3), np.uint8), np.zeros((3, 4), np.uint8))
    q = seg_quality(iter([(pseudo, gt), wrong_size]), num_classes=3)
    # compared pixels: gt known (not 255, not 7) and pseudo not 255 -> (0,0) (0,1) (0,2) (1,2) (1,3)
    # pseudo 0 0 1 2 2 vs gt 0 1 1 2 2: 4 correct of 5
    # class 0: inter 1, union 2; class 1: inter 1, union 2; class 2: inter 2, union 2
    assert q["images"] == 1 and q["gt_size_mismatch"] == 1
    assert q["gt_unknown_pixels"] == 1
    assert q["pixel_accuracy"] == pytest.approx(4 / 5)
    assert q["mIoU"] == pytest.approx((1 / 2 + 1 / 2 + 1) / 3)
    # known gt pixels: 6; labeled among them: 5 -> the pseudo mask ignores 1 of 6
    assert q["ignored_fraction"] == pytest.approx(1 / 6)
