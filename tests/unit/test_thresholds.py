"""Thresholds chosen after inference: the rules (hand-computed values), the 8-bit confidence
stored beside each pseudo mask, and a student's set built from stored labels with the
thresholds applied - exactly the labels at or above their class's threshold."""

import json

import numpy as np
import pytest

from selftrain.kinds import DETECTION, SEGMENTATION
from selftrain.pseudo_labels import (
    Thresholds,
    apply_confidence,
    choose_thresholds,
    mixture_threshold,
    quantile_threshold,
)
from storage.masks import encode_mask_shard, iter_mask_shard, quantize_confidence, read_mask
from storage.store import ArtifactStore

META = {"classes": ["cat", "dog"], "category_ids": [3, 7]}  # non-contiguous category ids


def test_quantile_keeps_the_top_share_ties_together():
    scores = np.array([0.9, 0.2, 0.7, 0.5])
    assert quantile_threshold(scores, None, 0.5) == 0.7  # 0.9, 0.7 kept: 2 of 4
    assert quantile_threshold(scores, None, 0.6) == 0.5  # 3 of 4 (the share is reached, not undershot)
    assert quantile_threshold(scores, None, 1.0) == 0.2
    assert quantile_threshold(np.array([0.8, 0.8, 0.8, 0.1]), None, 0.25) == 0.8  # ties: all three kept
    # weighted (a histogram of confidences): 10 pixels at 1.0, 30 at 0.6, 60 at 0.2
    assert quantile_threshold(np.array([0.2, 0.6, 1.0]), np.array([60, 30, 10]), 0.4) == 0.6
    assert quantile_threshold(np.array([0.2, 0.6, 1.0]), np.array([60, 30, 10]), 0.1) == 1.0


def test_mixture_splits_two_clusters_and_finds_none_in_one():
    scores = np.r_[np.full(50, 0.10), np.full(50, 0.12), np.full(30, 0.80), np.full(30, 0.85)]
    assert mixture_threshold(scores, None) == 0.80  # the lowest score of the high cluster
    # the same as a weighted histogram
    assert mixture_threshold(np.array([0.10, 0.12, 0.80, 0.85]), np.array([50, 50, 30, 30])) == 0.80
    assert mixture_threshold(np.full(10, 0.4), None) is None  # one value: one cluster


def test_rules_fall_back_for_few_labels_and_given_classes_win():
    many = (np.array([0.9, 0.8, 0.3, 0.2, 0.1]), None)
    chosen = choose_thresholds({"cat": many, "dog": (np.array([0.9]), None)}, "quantile", 0.5, {"bird": 0.2}, 0.4)
    assert chosen.per_class == {"cat": 0.8, "bird": 0.2}  # 2 of 5 cats kept; 1 dog: the default
    assert chosen.of("dog") == 0.5 and chosen.why["dog"].startswith("default: 1 labels")
    assert choose_thresholds({"cat": many}, "fixed", 0.4).per_class == {}
    assert Thresholds.from_json(chosen.to_json()) == chosen
    with pytest.raises(ValueError, match="rule must be one of"):
        choose_thresholds({}, "otsu", 0.5)
    with pytest.raises(ValueError, match=r"share in \(0, 1\]"):
        choose_thresholds({}, "quantile", 0.5, keep=0.0)


def test_confidence_is_stored_in_8_bits_and_applied_per_class():
    label = np.array([[0, 0, 1], [1, 1, 0]], np.uint8)
    confidence = np.array([[0.2, 0.9, 0.5], [0.49, 1.0, 0.0]])
    q = quantize_confidence(confidence)
    assert q.tolist() == [[51, 230, 128], [125, 255, 0]]
    t = Thresholds(default=0.5, per_class={"background": 0.1})
    quantised = t.quantised(["background", "thing"])
    assert quantised[:2].tolist() == [26, 128]  # ceil(25.5), ceil(127.5)
    # background pixels >= 0.1 kept; thing pixels >= 0.5 kept; the rest ignored (255)
    assert apply_confidence(label, q, quantised).tolist() == [[0, 0, 1], [255, 1, 255]]
    assert apply_confidence(label, None, quantised) is label  # stored with its threshold applied (version 1)

    data, index = encode_mask_shard([("a", label, q), ("b", label)], "masks.parquet")
    got = list(iter_mask_shard(data, confidence=True))
    assert got[0][0] == "a" and np.array_equal(got[0][1], label) and np.array_equal(got[0][2], q)
    assert got[1][2] is None  # a mask stored without confidence
    mask, conf = read_mask(data, 0, confidence=True)
    assert np.array_equal(conf, q) and np.array_equal(read_mask(data, 1), label)
    assert [m[0] for m in iter_mask_shard(data)] == ["a", "b"]


def box(image_id, label, score):
    return {
        "image_id": image_id,
        "image_uri": f"mem://{image_id}",
        "label": label,
        "x1": 0.0,
        "y1": 0.0,
        "x2": 2.0,
        "y2": 2.0,
        "score": score,
    }


def stat(image_id, n):
    return {
        "image_id": image_id,
        "image_uri": f"mem://{image_id}",
        "width": 4,
        "height": 4,
        "status": "ok",
        "error": None,
        "num_boxes": n,
        "mean_score": None,
    }


@pytest.fixture
def det_store(tmp_path):
    """A registered labeled set (cat = category 3, dog = 7) and one shard of stored boxes."""
    store = ArtifactStore(str(tmp_path / "store"))
    labeled = store.ref("d", DETECTION.dataset_stage, "1" * 32)
    store.write(labeled, {"x.json": b"{}"}, meta=META)
    boxes = [box("a", 3, 0.9), box("a", 7, 0.45), box("b", 3, 0.3), box("b", 3, 0.6), box("c", 7, 0.7)]
    boxes += [box("d", 3, 0.2), box("d", 7, 0.4), box("d", 7, 0.1)]
    shard = store.ref("d", DETECTION.pseudo_stage, "0" * 32)
    with store.writer(shard) as w:
        for name, data in DETECTION.shard_files(
            boxes, [stat("a", 2), stat("b", 2), stat("c", 1), stat("d", 3)]
        ).items():
            w.write_bytes(name, data)
    return store, labeled, shard


def test_a_students_boxes_are_exactly_those_at_or_above_their_class_threshold(det_store, tmp_path):
    from selftrain.mm.configs import CocoSource
    from selftrain.student_data import pseudo_coco

    store, _, shard = det_store
    ann = tmp_path / "labeled.json"
    ann.write_text(
        json.dumps(
            {"images": [], "annotations": [], "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]}
        )
    )
    labeled = CocoSource(ann_file=str(ann), image_root="", classes=("cat", "dog"))
    t = Thresholds(default=0.5, per_class={"dog": 0.4})
    src, images, held = pseudo_coco(store, [([shard], None)], labeled, str(tmp_path / "p.json"), t)
    coco = json.load(open(src.ann_file))
    kept = sorted((a["category_id"], round(a["score"], 6)) for a in coco["annotations"])
    assert kept == [(3, 0.6), (3, 0.9), (7, 0.4), (7, 0.45), (7, 0.7)]  # cats under 0.5, dogs under 0.4 dropped
    assert images == 4 and held == {"labels": 5, "per_class": {"cat": 2, "dog": 3}, "unit": "boxes"}
    with pytest.raises(ValueError, match="no pseudo boxes.*reaches its threshold.*lower score_threshold"):
        pseudo_coco(store, [([shard], None)], labeled, str(tmp_path / "q.json"), Thresholds(default=0.95))
    # a teacher that stored no box at all: a threshold of 0 cannot be lowered, the advice says so
    empty = store.ref("d", DETECTION.pseudo_stage, "2" * 32)
    with store.writer(empty) as w:
        for name, data in DETECTION.shard_files([], [stat("e", 0)]).items():
            w.write_bytes(name, data)
    for default in (0.0, 0.5):  # no threshold can help: the advice says so
        with pytest.raises(ValueError, match=rf"\(fixed {default:g}\); the teacher stored no box at all") as raised:
            pseudo_coco(store, [([empty], None)], labeled, str(tmp_path / "r.json"), Thresholds(default=default))
        assert "lower score_threshold" not in str(raised.value)


def test_the_threshold_stage_records_each_class_value_and_what_it_keeps(det_store):
    from tasks.choose_thresholds import choose_thresholds as task
    from tasks.choose_thresholds import read_thresholds

    store, labeled, shard = det_store
    ref = task.fn(store.url, labeled, [shard], rule="quantile", default=0.5, keep=0.5)
    stored = store.read_json(ref, "thresholds.json")
    # cats 0.9, 0.6, 0.3, 0.2: top half = 2 of 4 -> 0.6; dogs 0.7, 0.45, 0.4, 0.1 -> 0.45
    assert stored["per_class"] == pytest.approx({"cat": 0.6, "dog": 0.45})
    assert stored["counts"] == {"cat": {"labels": 4, "kept": 2}, "dog": {"labels": 4, "kept": 2}}
    assert read_thresholds(store.url, ref).of("dog") == pytest.approx(0.45)
    assert task.fn(store.url, labeled, [shard], rule="quantile", default=0.5, keep=0.5) == ref  # reused
    fixed = task.fn(store.url, labeled, [shard], rule="fixed", default=0.5, class_thresholds={"dog": 0.8})
    assert store.read_json(fixed, "thresholds.json")["counts"]["dog"] == {"labels": 4, "kept": 0}
    with pytest.raises(ValueError, match=r"unknown classes \['bird'\]"):
        task.fn(store.url, labeled, [shard], default=0.5, class_thresholds={"bird": 0.1})


def test_the_report_view_counts_kept_and_below_and_masks_apply_confidence(det_store, tmp_path):
    store, _, shard = det_store
    labels = DETECTION.open_pseudo(store, [shard], META, Thresholds(default=0.5))
    s = labels.label_stats(META, bins=2)
    assert s["per_class"] == {"cat": 2, "dog": 1} and s["below_threshold"] == {"cat": 2, "dog": 3}
    assert sorted(b["score"] for b in labels.below({"a"})["a"]) == pytest.approx([0.45])
    assert labels.summary()["boxes_below_threshold"] == 5 and len(labels.boxes) == 3  # counted, not kept
    assert s["images_without_labels"] == 1 and s["images_without_labels_sample"] == ["d"]  # every box below

    label = np.array([[0, 1], [1, 1]], np.uint8)
    conf = quantize_confidence(np.array([[0.9, 0.3], [0.8, 0.6]]))
    mask_stats = SEGMENTATION.shard_files  # the kind writes the shard as pseudo labeling does
    from selftrain.pseudo_sets import mask_stats as stats_row

    ref = store.ref("d", SEGMENTATION.pseudo_stage, "2" * 32)
    with store.writer(ref) as w:
        row = stats_row({"image_id": "m", "image_uri": "mem://m"}, label, np.full((2, 2), 0.7), "")
        for name, data in mask_stats([("m", label, conf)], [row]).items():
            w.write_bytes(name, data)
    seg = {"classes": ["background", "thing"]}
    masks = SEGMENTATION.open_pseudo(store, [ref], seg, Thresholds(default=0.5, per_class={"thing": 0.7}))
    assert masks.masks["m"].tolist() == [[0, 255], [1, 255]]  # things under 0.7 ignored
    s = masks.label_stats(seg, bins=2)
    assert s["per_class"] == {"background": 1, "thing": 1, "ignored (255)": 2}
    assert s["below_threshold"] == {"background": 0, "thing": 2}
    values, weights = masks.class_scores()["thing"]
    assert weights.sum() == 3 and weights[conf[1, 1]] == 1  # three thing pixels, one at 0.6
    masks.close()


def test_the_lowest_scored_images_are_ranked_by_the_boxes_the_thresholds_keep(det_store, tmp_path):
    from selftrain.export import select_images

    store, _, shard = det_store
    # mean kept score at 0.5: a 0.9, b 0.6, c 0.7, d none (0); of every stored box: a 0.675, b 0.45, c 0.7, d 0.23
    kept = DETECTION.open_pseudo(store, [shard], META, Thresholds(default=0.5))
    assert [r["image_id"] for r in select_images(kept, store, lowest=3)] == ["b", "c", "d"]
    stored = DETECTION.open_pseudo(store, [shard], META)
    assert [r["image_id"] for r in select_images(stored, store, lowest=3)] == ["a", "b", "d"]


def test_masks_stored_with_their_threshold_applied_are_counted_not_rethresholded(tmp_path):
    from selftrain.pseudo_sets import mask_stats

    store = ArtifactStore(str(tmp_path))
    label = np.array([[0, 255], [1, 1]], np.uint8)  # a version-1 mask: the threshold already applied
    ref = store.ref("d", SEGMENTATION.pseudo_stage, "4" * 32)
    row = mask_stats({"image_id": "m", "image_uri": "mem://m"}, label, np.full((2, 2), 0.9), "")
    with store.writer(ref) as w:
        for name, data in SEGMENTATION.shard_files([("m", label)], [row]).items():
            w.write_bytes(name, data)
    seg = {"classes": ["background", "thing"]}
    masks = SEGMENTATION.open_pseudo(store, [ref], seg, Thresholds(default=0.99))
    s = masks.label_stats(seg)
    assert s["stored_thresholded"] == 1 and s["per_class"] == {"background": 1, "thing": 2, "ignored (255)": 1}
    assert masks.masks["m"].tolist() == label.tolist() and masks.masks.stored_thresholded == 1
    masks.close()
