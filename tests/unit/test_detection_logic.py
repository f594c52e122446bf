"""Pure logic of the detection stages, with hand-computed expectations."""

import json

import pytest

from selftrain.pseudo_labels import threshold_boxes
from selftrain.registration import DatasetError
from tasks.list_unlabeled import EmptyUnlabeledSet, list_images
from tasks.register_dataset import validate_coco
from tasks.shard_images import make_shards


def test_threshold_is_hard_and_per_class():
    scores = [0.9, 0.5, 0.49, 0.3]
    labels = [0, 1, 0, 1]
    assert threshold_boxes(None, scores, labels, 0.5, {}) == [0, 1]  # >= threshold is kept
    assert threshold_boxes(None, scores, labels, 0.5, {1: 0.25}) == [0, 1, 3]
    assert threshold_boxes(None, scores, labels, 0.95, {}) == []


def test_shards_are_deterministic_and_order_free():
    rows = [{"image_id": i} for i in ["e", "a", "d", "b", "c"]]
    shards = make_shards(rows, 2)
    assert [[r["image_id"] for r in s] for s in shards] == [["a", "b"], ["c", "d"], ["e"]]
    assert make_shards(list(reversed(rows)), 2) == shards
    with pytest.raises(ValueError, match="shard_size must be positive"):
        make_shards(rows, 0)


def _coco(**over):
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "width": 100, "height": 80}],
        "annotations": [{"id": 7, "image_id": 1, "category_id": 3, "bbox": [10, 10, 20, 20]}],
        "categories": [{"id": 3, "name": "tree"}],
    }
    coco.update(over)
    return json.dumps(coco).encode()


def test_valid_coco_is_normalised_and_slightly_outside_boxes_are_clipped():
    ann = {"id": 8, "image_id": 1, "category_id": 3, "bbox": [-0.5, 70, 20, 10.5]}
    coco = validate_coco(_coco(annotations=[ann]), "x.json")
    assert coco["annotations"][0]["bbox"] == [0.0, 70.0, 19.5, 10.0]
    assert coco["annotations"][0]["area"] == 195.0


@pytest.mark.parametrize(
    "raw,match",
    [
        (b"{not json", "x.json: not valid JSON"),
        (b"[]", "top level must be an object"),
        (_coco(images=[]), "no images"),
        (
            _coco(annotations=[{"id": 7, "image_id": 1, "category_id": 9, "bbox": [1, 1, 2, 2]}]),
            "annotation 7 has unknown category id 9",
        ),
        (
            _coco(annotations=[{"id": 7, "image_id": 1, "category_id": 3, "bbox": [90, 10, 20, 20]}]),
            r"annotation 7 box \[90, 10, 20, 20\] lies outside image a.png \(100x80\)",
        ),
        (
            _coco(annotations=[{"id": 7, "image_id": 2, "category_id": 3, "bbox": [1, 1, 2, 2]}]),
            "refers to unknown image id 2",
        ),
        (_coco(annotations=[{"id": 7, "image_id": 1, "category_id": 3, "bbox": [1, 1, 0, 2]}]), "empty box"),
        (_coco(annotations=[{"id": 7, "image_id": 1, "category_id": 3, "bbox": "oops"}]), "malformed bbox"),
        (_coco(images=[{"id": 1, "file_name": "a.png"}]), "needs id, file_name, width and height"),
    ],
)
def test_malformed_coco_is_refused_naming_the_item(raw, match):
    with pytest.raises(DatasetError, match=match):
        validate_coco(raw, "x.json")


def test_unlabeled_listing(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ["b.png", "sub/a.JPG", "notes.txt"]:
        (tmp_path / name).write_bytes(b"123")
    rows = list_images(str(tmp_path))
    assert [(r["image_id"], r["size"]) for r in rows] == [("b.png", 3), ("sub/a.JPG", 3)]
    assert rows[0]["image_uri"] == str(tmp_path / "b.png")


def test_empty_or_missing_unlabeled_set_is_a_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(EmptyUnlabeledSet, match="the unlabeled set is empty"):
        list_images(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_images(str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="unlabeled image .* does not exist"):
        list_images([str(tmp_path / "nope.png")])


def test_image_rows_clip_map_labels_and_record_skips():
    import torch
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    from selftrain.pseudo_sets import image_rows

    pred = DetDataSample(metainfo=dict(ori_shape=(50, 60)))
    pred.pred_instances = InstanceData(
        bboxes=torch.tensor([[-2.0, 5.0, 20.0, 70.0], [10.0, 10.0, 20.0, 20.0], [1.0, 1.0, 2.0, 2.0]]),
        scores=torch.tensor([0.75, 0.5, 0.25]),
        labels=torch.tensor([1, 0, 0]),
    )
    image = {"image_id": "a.png", "image_uri": "/u/a.png"}
    rows, stat = image_rows(image, pred, "", category_ids=[3, 7])
    # every box is stored with its score (thresholds apply when a student's set is built)
    assert [(r["label"], r["x1"], r["y1"], r["x2"], r["y2"], r["score"]) for r in rows] == [
        (7, 0.0, 5.0, 20.0, 50.0, 0.75),
        (3, 10.0, 10.0, 20.0, 20.0, 0.5),
        (3, 1.0, 1.0, 2.0, 2.0, 0.25),
    ]
    assert stat == {
        "image_id": "a.png",
        "image_uri": "/u/a.png",
        "width": 60,
        "height": 50,
        "status": "ok",
        "error": None,
        "num_boxes": 3,
        "mean_score": 0.5,
    }
    rows, stat = image_rows(image, pred, "OSError: truncated", [3, 7])
    assert rows == [] and stat["status"] == "skipped" and stat["error"] == "OSError: truncated"
