"""The detection AutoAugment policy of Zoph et al. 2019 (policy v0) in presets S2 / S3: its
values pinned against the reference implementation (tensorflow/tpu autoaugment_utils.py), and
the three operations mmdet lacks checked pixel by pixel."""

from __future__ import annotations

import math

import numpy as np
import pytest

import selftrain.mm  # noqa: F401 - registers the operations
from selftrain.mm.configs.files import aug_preset

# (op, probability, level) of the reference's policy_v0, and its level -> argument maps
POLICY_V0 = [
    [("TranslateX_BBox", 0.6, 4), ("Equalize", 0.8, 10)],
    [("TranslateY_Only_BBoxes", 0.2, 2), ("Cutout", 0.8, 8)],
    [("Sharpness", 0.0, 8), ("ShearX_BBox", 0.4, 0)],
    [("ShearY_BBox", 1.0, 2), ("TranslateY_Only_BBoxes", 0.6, 6)],
    [("Rotate_BBox", 0.6, 10), ("Color", 1.0, 6)],
]


def reference_argument(op: str, level: int) -> float:
    return {
        "TranslateX_BBox": level / 10 * 250,  # translate_const
        "TranslateY_Only_BBoxes": level / 10 * 120,  # translate_bbox_const
        "Cutout": int(level / 10 * 100),  # cutout_const
        "ShearX_BBox": level / 10 * 0.3,
        "ShearY_BBox": level / 10 * 0.3,
        "Rotate_BBox": level / 10 * 30,
        "Color": level / 10 * 1.8 + 0.1,
    }.get(op, float("nan"))


def built(op: dict):
    """``op`` built as a detection pipeline builds it (in the mmdet scope, whatever scope an
    earlier test of this process left current)."""
    from mmdet.registry import TRANSFORMS
    from mmengine.registry import DefaultScope

    with DefaultScope.overwrite_default_scope("mmdet"):
        return TRANSFORMS.build(op)


@pytest.mark.parametrize("preset", ["S2", "S3"])
def test_s2_and_s3_hold_the_reference_policy_v0_with_its_values(preset):
    from mmdet.datasets.transforms.augment_wrappers import level_to_mag

    (auto,) = aug_preset(preset).policy
    assert auto["type"] == "AutoAugment"
    ours = auto["policies"]
    assert len(ours) == len(POLICY_V0) == 5
    for mine, ref in zip(ours, POLICY_V0, strict=True):
        assert len(mine) == len(ref) == 2
        for op, (name, prob, level) in zip(mine, ref, strict=True):
            arg = reference_argument(name, level)
            t = built(op)
            if name == "TranslateX_BBox":
                assert (type(t).__name__, t.prob, t.pixels) == ("TranslateXPixels", prob, arg)
            elif name == "TranslateY_Only_BBoxes":
                assert type(t).__name__ == "BBoxOnlyTranslateY" and t.pixels == arg
                assert t.box_prob == pytest.approx(prob / 3)  # the reference's per-box probability
            elif name == "Cutout":
                assert (type(t).__name__, t.prob, t.half_size, t.fill) == ("CenteredCutOut", prob, arg, 128)
            elif name in ("ShearX_BBox", "ShearY_BBox"):
                assert type(t).__name__ == name[:6] and t.prob == prob
                degrees = level_to_mag(t.level, t.min_mag, t.max_mag)  # mmdet rounds to 0.1 degree
                assert math.tan(math.radians(degrees)) == pytest.approx(arg, abs=0.001)
            elif name == "Rotate_BBox":
                assert type(t).__name__ == "Rotate" and t.prob == prob
                assert level_to_mag(t.level, t.min_mag, t.max_mag) == arg == 30
            elif name == "Color":
                assert type(t).__name__ == "Color" and t.prob == prob
                assert level_to_mag(t.level, t.min_mag, t.max_mag) == pytest.approx(arg, abs=0.05)  # 1.2 vs 1.18
            else:
                assert type(t).__name__ == name and t.prob == prob


def sample(h=120, w=200, boxes=((20.0, 30.0, 60.0, 90.0),)):
    from mmdet.structures.bbox import HorizontalBoxes

    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    return {
        "img": img,
        "img_shape": (h, w),
        "gt_bboxes": HorizontalBoxes(np.array(boxes, dtype=np.float32).reshape(-1, 4)),
        "gt_bboxes_labels": np.zeros(len(boxes), dtype=np.int64),
        "gt_ignore_flags": np.zeros(len(boxes), dtype=bool),
    }


@pytest.mark.parametrize("width", [250, 333])
def test_translate_x_moves_image_and_boxes_by_the_same_pixels_whatever_the_width(width):
    from selftrain.mm.detection_autoaugment import TranslateXPixels

    t = TranslateXPixels(pixels=100, prob=1.0)
    for _ in range(6):
        s = sample(w=width, boxes=((120.0, 30.0, 140.0, 90.0),))
        img = s["img"].copy()
        out = t.transform(s)
        dx = out["gt_bboxes"].numpy()[0][0] - 120.0
        assert abs(dx) == 100  # 100 px right or left, not a fraction of the width
        if dx > 0:
            assert np.array_equal(out["img"][:, 100:], img[:, :-100]) and (out["img"][:, :100] == 128).all()
        else:
            assert np.array_equal(out["img"][:, :-100], img[:, 100:]) and (out["img"][:, -100:] == 128).all()


def test_box_only_translation_moves_the_pixels_inside_boxes_and_nothing_else():
    from selftrain.mm.detection_autoaugment import BBoxOnlyTranslateY

    np.random.seed(0)  # the sign is drawn per image: a fixed seed, so that both signs are seen
    t = BBoxOnlyTranslateY(pixels=24, box_prob=1.0)
    seen = set()
    for _ in range(12):
        s = sample(boxes=((20.0, 30.0, 60.0, 90.0), (100.0, 10.0, 150.0, 40.0)))
        img = s["img"].copy()
        out = t.transform(s)
        assert np.array_equal(out["gt_bboxes"].numpy(), s["gt_bboxes"].numpy())  # boxes unchanged
        new = out["img"]
        outside = np.ones(img.shape[:2], bool)
        outside[30:91, 20:61] = outside[10:41, 100:151] = False  # int(y1)..int(y2) inclusive
        assert np.array_equal(new[outside], img[outside])
        down = np.array_equal(new[30:91, 20:61][24:], img[30:91, 20:61][:-24])
        seen.add("down" if down else "up")
        for rows, cols in ((slice(30, 91), slice(20, 61)), (slice(10, 41), slice(100, 151))):  # both boxes
            region, before = new[rows, cols], img[rows, cols]
            if down:  # moved down: the top 24 rows filled
                assert np.array_equal(region[24:], before[:-24]) and (region[:24] == 128).all()
            else:
                assert np.array_equal(region[:-24], before[24:]) and (region[-24:] == 128).all()
    assert seen == {"up", "down"}  # both signs drawn
    empty = {"img": img.copy(), "img_shape": img.shape[:2]}  # a segmentation sample: no boxes
    assert np.array_equal(t.transform(empty)["img"], img)
    assert BBoxOnlyTranslateY(pixels=24, box_prob=0.0).transform(sample())["img"].tolist() == sample()["img"].tolist()


def test_centred_cutout_is_a_square_around_a_uniform_pixel_clipped_at_the_border():
    """Mean hole area over many draws on a 200 x 120 image with half side 80, against the
    expectation enumerated over every centre: a hole spans min(n, c + 80) - max(0, c - 80)
    pixels along an axis of n pixels with its centre c uniform in 0..n-1 (both axes
    independent). mmdet's CutOut (top-left corner uniform) gives a different mean."""
    from selftrain.mm.detection_autoaugment import CenteredCutOut

    def span(n, half):
        return np.mean([min(n, c + half) - max(0, c - half) for c in range(n)])

    expected = span(120, 80) * span(200, 80)
    np.random.seed(0)
    t = CenteredCutOut(half_size=80, prob=1.0)
    areas = []
    for _ in range(2000):
        img = np.zeros((120, 200, 3), np.uint8)
        out = t.transform({"img": img, "img_shape": (120, 200)})["img"]
        hole = (out == 128).all(axis=2)
        rows, cols = np.nonzero(hole.any(axis=1))[0], np.nonzero(hole.any(axis=0))[0]
        assert hole.sum() == len(rows) * len(cols)  # one axis-aligned rectangle
        areas.append(hole.sum())
    assert np.mean(areas) == pytest.approx(expected, rel=0.02)
    assert CenteredCutOut(half_size=80, prob=0.0).transform({"img": img, "img_shape": (120, 200)})["img"] is img


def test_the_policy_runs_on_detection_samples_and_keeps_boxes_inside_the_image():
    np.random.seed(1)
    (auto,) = aug_preset("S3").policy
    policy = built(auto)
    for _ in range(60):
        out = policy(sample(boxes=((20.0, 30.0, 60.0, 90.0), (150.0, 80.0, 199.0, 119.0))))
        assert out["img"].shape == (120, 200, 3) and out["img"].dtype == np.uint8
        b = out["gt_bboxes"].numpy()
        assert (b[:, 0] >= 0).all() and (b[:, 2] <= 200).all() and (b[:, 1] >= 0).all() and (b[:, 3] <= 120).all()
