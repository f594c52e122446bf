"""Checkpoint-stability ranking (docs/design.md §3.3) on hand-made masks and boxes, hand-computed values."""

import numpy as np
import pytest

from selftrain.stability import box_f1, det_stability, mask_mean_iou, rank, seg_stability


def test_mean_iou_skips_absent_classes_and_scores_one_sided_classes_zero():
    ref = np.array([[0, 0, 1, 1], [0, 0, 1, 1]])
    pred = np.array([[0, 0, 0, 1], [0, 0, 2, 1]])
    # class 0: inter 4, union 5 -> 0.8; class 1: inter 2, union 4 -> 0.5;
    # class 2 only in pred -> 0; classes 3.. absent from both -> skipped.
    assert mask_mean_iou(pred, ref) == pytest.approx((0.8 + 0.5 + 0.0) / 3)
    assert mask_mean_iou(ref, ref) == 1.0


def test_mean_iou_leaves_out_ignored_pixels_and_two_empty_maps_agree():
    ref = np.array([[1, 1, 255]])
    pred = np.array([[1, 0, 0]])
    # valid pixels: first two; class 1: inter 1, union 2 -> 0.5; class 0 only in pred -> 0
    assert mask_mean_iou(pred, ref) == pytest.approx(0.25)
    assert mask_mean_iou(np.full((2, 2), 255), np.full((2, 2), 255)) == 1.0
    with pytest.raises(ValueError, match="differ in shape"):
        mask_mean_iou(np.zeros((2, 2)), np.zeros((2, 3)))


def test_seg_stability_sums_over_the_first_k_minus_one_checkpoints():
    last = np.array([[0, 1]])
    f1 = np.array([[0, 0]])  # class 0: 1/2; class 1: 0 -> 0.25
    f2 = np.array([[0, 1]])  # identical -> 1
    assert seg_stability([f1, f2, last]) == pytest.approx(1.25)
    with pytest.raises(ValueError, match="at least 2 checkpoints"):
        seg_stability([last])


def test_box_f1_is_class_aware_and_one_to_one():
    ref = [[0, 0, 10, 10], [20, 20, 30, 30]]
    # the first matches ref 0 (IoU 1); the second overlaps ref 0 too but ref 0 is taken;
    # the third has IoU 1 with ref 1 but another class.
    pred = [[0, 0, 10, 10], [0, 0, 10, 9], [20, 20, 30, 30]]
    assert box_f1(pred, [0, 0, 1], ref, [0, 0]) == pytest.approx(2 * 1 / (3 + 2))
    assert box_f1(pred, [0, 0, 0], ref, [0, 0]) == pytest.approx(2 * 2 / (3 + 2))
    # IoU 0.5 exactly counts: [0,0,10,10] vs [0,0,10,5] -> 50/100
    assert box_f1([[0, 0, 10, 5]], [0], [[0, 0, 10, 10]], [0]) == 1.0
    assert box_f1([[0, 0, 10, 4]], [0], [[0, 0, 10, 10]], [0]) == 0.0


def test_box_f1_empty_sets():
    assert box_f1([], [], [], []) == 1.0  # two empty sets agree
    assert box_f1([[0, 0, 1, 1]], [0], [], []) == 0.0
    assert box_f1([], [], [[0, 0, 1, 1]], [0]) == 0.0


def test_det_stability_sums_f1_against_the_last_checkpoint():
    last = ([[0, 0, 10, 10]], [0])
    assert det_stability([([], []), ([[0, 0, 10, 10]], [0]), last]) == pytest.approx(0.0 + 1.0)
    assert det_stability([([], []), ([], [])]) == 1.0


def test_rank_top_fraction_with_ties_broken_by_image_id():
    rows = rank({"c": 1.0, "a": 1.0, "b": 2.0, "d": 0.5, "e": 0.0}, 0.5)
    assert [r["image_id"] for r in rows] == ["b", "a", "c", "d", "e"]
    assert [r["rank"] for r in rows] == [0, 1, 2, 3, 4]
    assert [r["reliable"] for r in rows] == [True, True, False, False, False]  # floor(2.5) = 2, as ST++
    assert [r["reliable"] for r in rank({"a": 1.0, "b": 0.0}, 0.0)] == [False, False]
    assert [r["reliable"] for r in rank({"a": 1.0, "b": 0.0, "c": 0.5, "d": 0.7}, 0.5)] == [True, True, False, False]
    assert [r["reliable"] for r in rank({"a": 1.0}, 0.5)] == [True]  # floor(0.5) = 0, kept at one
    with pytest.raises(ValueError, match="reliable_fraction"):
        rank({"a": 1.0}, 1.5)
    with pytest.raises(ValueError, match="non-finite"):
        rank({"a": float("nan")})
