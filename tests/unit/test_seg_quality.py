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


def test_ground_truth_masks_are_read_as_registration_reads_label_maps(tmp_path):
    from PIL import Image

    from selftrain.diagnostics import load_gt_mask
    from selftrain.registration import DatasetError

    labels = np.array([[0, 1], [2, 1]], dtype=np.uint8)
    Image.fromarray(labels).save(tmp_path / "gray.png")
    assert np.array_equal(load_gt_mask(str(tmp_path), "gray.jpg", ".png"), labels)
    assert seg_quality(iter([(labels, load_gt_mask(str(tmp_path), "gray.jpg", ".png"))]), 3)["mIoU"] == 1.0
    # a palette PNG (PASCAL VOC) is read as its indices, not its colours
    pal = Image.fromarray(labels, mode="P")
    pal.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * 759)
    pal.save(tmp_path / "voc.png")
    assert load_gt_mask(str(tmp_path), "voc.jpg", ".png").tolist() == labels.tolist()
    # more than one channel (colour-coded, or indices saved as RGB) is refused naming the file,
    # with the same words registration uses for a labeled set
    for name, arr in (("colour", np.stack([labels, labels * 2, labels], -1)), ("rgb", np.stack([labels] * 3, -1))):
        Image.fromarray(arr).save(tmp_path / f"{name}.png")
        with pytest.raises(DatasetError, match=rf"label map .*{name}.png has mode RGB"):
            load_gt_mask(str(tmp_path), f"{name}.jpg", ".png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"broken.png cannot be read"):
        load_gt_mask(str(tmp_path), "broken.jpg", ".png")
    # a 1-bit mask: its 1 mapped to 255 (ignore) is 255, not True
    Image.fromarray(np.array([[True, False]])).save(tmp_path / "bits.png")
    got = load_gt_mask(str(tmp_path), "bits.jpg", ".png", {"1": "255", "0": "2"})
    assert got.tolist() == [[255, 2]]
    assert load_gt_mask(str(tmp_path), "bits.jpg", ".png").tolist() == [[1, 0]]
    # a 16-bit value is kept (seg_quality counts it as no class), not wrapped to 257 % 256 = 1
    Image.fromarray(np.array([[257, 1]], dtype=np.uint16)).save(tmp_path / "wide.png")
    assert load_gt_mask(str(tmp_path), "wide.jpg", ".png").tolist() == [[257, 1]]
    assert load_gt_mask(str(tmp_path), "missing.jpg", ".png") is None
