"""A run's pseudo labels as one table (streamed from the stored shards), the report's picture
and `selftrain labels`, on hand-made shards with hand-counted expectations."""

import json

import numpy as np
import pytest

from selftrain.kinds import DETECTION, SEGMENTATION
from storage.store import ArtifactStore

META = {"classes": ["cat", "dog"], "category_ids": [3, 7]}


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


def stat(image_id, n, status="ok"):
    ok = status == "ok"
    return {
        "image_id": image_id,
        "image_uri": f"mem://{image_id}",
        "width": 4 if ok else None,
        "height": 4 if ok else None,
        "status": status,
        "error": None if ok else "unreadable",
        "num_boxes": n if ok else None,
        "mean_score": None,
    }


@pytest.fixture
def box_shards(tmp_path):
    store = ArtifactStore(str(tmp_path))
    shards = []
    contents = [
        ([box("a", 3, 0.91), box("a", 7, 0.42), box("b", 3, 1.0)], [stat("a", 2), stat("b", 1), stat("c", 0)]),
        ([box("d", 3, 0.05)], [stat("d", 1), stat("e", 0), stat("f", 0, status="skipped")]),
    ]
    for i, (boxes, stats) in enumerate(contents):
        ref = store.ref("d", DETECTION.pseudo_stage, f"{i:032x}")
        with store.writer(ref) as w:
            for name, data in DETECTION.shard_files(boxes, stats).items():
                w.write_bytes(name, data)
        shards.append(ref)
    return store, shards


def test_box_statistics_count_classes_scores_and_empty_images(box_shards):
    store, shards = box_shards
    labels = DETECTION.open_pseudo(store, shards, META)
    s = labels.label_stats(META, bins=4)  # bins [0, .25) [.25, .5) [.5, .75) [.75, 1]
    assert s["per_class"] == {"cat": 3, "dog": 1}  # by category id 3 / 7
    assert s["histogram"]["edges"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert s["histogram"]["counts"] == [1, 1, 0, 2]  # 0.05 | 0.42 | - | 0.91, 1.0 (1.0 in the last bin)
    assert s["images_by_count"] == {"0": 2, "1": 2, "2": 1}  # the skipped image f is not counted
    assert s["images_without_labels"] == 2 and s["images_without_labels_sample"] == ["c", "e"]


def test_mask_statistics_count_pixels_per_class_and_fully_ignored_images(tmp_path):
    store = ArtifactStore(str(tmp_path))
    m1 = np.array([[0, 0], [1, 255]], np.uint8)
    m2 = np.full((2, 3), 255, np.uint8)  # every pixel below the threshold
    labels, stats = [], []
    for image_id, mask, conf in (("x", m1, 0.8), ("y", m2, 0.3)):
        image = {"image_id": image_id, "image_uri": f"mem://{image_id}"}
        from selftrain.pseudo_sets import mask_stats

        labels.append((image_id, mask))
        stats.append(mask_stats(image, mask, np.full(mask.shape, conf, np.float32), ""))
    ref = store.ref("d", SEGMENTATION.pseudo_stage, "0" * 32)
    with store.writer(ref) as w:
        for name, data in SEGMENTATION.shard_files(labels, stats).items():
            w.write_bytes(name, data)
    pseudo = SEGMENTATION.open_pseudo(store, [ref], {"classes": ["background", "flower"]})
    s = pseudo.label_stats({"classes": ["background", "flower"]}, bins=2)
    pseudo.close()
    assert s["unit"] == "pixels"
    assert s["per_class"] == {"background": 2, "flower": 1, "ignored (255)": 1 + 6}
    assert s["histogram"]["counts"] == [1, 1]  # mean confidences 0.3 and 0.8
    assert s["images_without_labels"] == 1 and s["images_without_labels_sample"] == ["y"]


def test_the_report_picture_is_a_png(box_shards):
    from selftrain.report import label_stats_png

    store, shards = box_shards
    png = label_stats_png(DETECTION.open_pseudo(store, shards, META).label_stats(META))
    assert png.startswith(b"\x89PNG")


def test_selftrain_labels_prints_the_table_of_a_report(box_shards, tmp_path, capsys):
    from app.cli import main

    store, shards = box_shards
    labeled = store.ref("d", DETECTION.dataset_stage, "f" * 32)
    store.write(labeled, {"coco.json": b"{}"}, meta=META)
    folder = tmp_path / "report"
    folder.mkdir()
    report = {
        "dataset": "d",
        "task": "detection",
        "artifacts": {"labeled": labeled.uri},
        "pseudo_shards": [r.uri for r in shards],
    }
    (folder / "report.json").write_text(json.dumps(report))
    assert main(["labels", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "cat" in out and "3 boxes" in out and "dog" in out and "1 boxes" in out
    assert "images without a pseudo label: 2 (e.g. c, e)" in out
    assert main(["labels", str(tmp_path / "nothing")]) == 2
    assert "no report at" in capsys.readouterr().err


def test_overlays_put_the_ground_truth_beside_the_pseudo_labels(tmp_path):
    import io

    from PIL import Image

    from selftrain.report import mask_overlay_png, overlay_png

    path = tmp_path / "img.png"
    Image.new("RGB", (40, 30), (90, 90, 90)).save(path)
    boxes = [{"x1": 2.0, "y1": 12.0, "x2": 20.0, "y2": 28.0, "label": 3, "score": 0.87}]
    alone = Image.open(io.BytesIO(overlay_png(str(path), boxes, {3: "cat"})))
    beside = Image.open(io.BytesIO(overlay_png(str(path), boxes, {3: "cat"}, ([[1, 1, 10, 10]], [3]))))
    assert alone.size == (40, 30) and beside.size == (80, 30)
    assert beside.getpixel((40 + 1, 5))[1] > 200  # the ground-truth box is drawn green in the second panel
    assert alone.getpixel((2, 20))[0] > 200  # the pseudo box red in the first
    mask = np.zeros((30, 40), np.uint8)
    assert Image.open(io.BytesIO(mask_overlay_png(str(path), mask))).size == (80, 30)
    assert Image.open(io.BytesIO(mask_overlay_png(str(path), mask, np.ones((30, 40), np.uint8)))).size == (120, 30)


def test_the_report_gives_the_kept_pseudo_labels_quality_against_the_pools_truth():
    """Where the unlabeled images' ground truth is given (unlabeled_gt), the report says how
    good the labels the students are taught are, for every method (it said so for st++ only)."""
    import json

    from selftrain.report import markdown

    report = {
        "dataset": "d",
        "task": "detection",
        "method": "zoph",
        "metrics": {"teacher": {"bbox_mAP": 0.1}},
        "pseudo_labels": {
            "images": 78,
            "skipped": 0,
            "skipped_images": [],
            "boxes": 530,
            "boxes_per_image": 6.79,
            "mean_score": 0.634,
        },
        "pseudo_quality": {"images": 78, "pseudo_boxes": 530, "true_boxes": 501, "precision": 0.5, "recall": 0.5289},
        "overlays": [],
        "artifacts": {},
        "parameters": {"score_threshold": 0.4},
        "thresholds": None,
    }
    text = markdown(json.loads(json.dumps(report)))
    assert "| images | pseudo_boxes | true_boxes | precision | recall |" in text
    assert "| 78 | 530 | 501 | 0.500 | 0.529 |" in text
    assert "ground truth" not in markdown(report | {"pseudo_quality": None}).split("## Overlays")[0]
