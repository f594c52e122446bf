"""Exporting pseudo labels: COCO with scores (read back by pycocotools), Label Studio tasks,
PNG label maps, and the selections (ranking half, lowest scores, one class), on hand-made shards."""

import json

import numpy as np
import pytest
from PIL import Image

from selftrain.export import ExportError, export_labels
from selftrain.kinds import DETECTION, SEGMENTATION
from selftrain.pseudo_sets import mask_stats
from storage.schemas import RANKING, table_from_rows, to_parquet_bytes
from storage.store import ArtifactStore

META = {"classes": ["cat", "dog"], "category_ids": [3, 7]}  # non-contiguous category ids


def box(image_id, label, score, x1=10.0, y1=20.0, x2=30.0, y2=60.0):
    return {
        "image_id": image_id,
        "image_uri": f"s3://b/u/{image_id}",
        "label": label,
        "x1": x1,
        "y1": y1,
        "x2": x2,
        "y2": y2,
        "score": score,
    }


def stat(image_id, n, mean):
    return {
        "image_id": image_id,
        "image_uri": f"s3://b/u/{image_id}",
        "width": 100,
        "height": 200,
        "status": "ok",
        "error": None,
        "num_boxes": n,
        "mean_score": mean,
    }


@pytest.fixture
def run(tmp_path):
    store = ArtifactStore(str(tmp_path / "store"))
    boxes = [box("a.jpg", 3, 0.9), box("a.jpg", 7, 0.5), box("b.jpg", 7, 0.6), box("sub/c.jpg", 3, 0.95)]
    stats = [stat("a.jpg", 2, 0.7), stat("b.jpg", 1, 0.6), stat("sub/c.jpg", 1, 0.95), stat("d.jpg", 0, None)]
    shard = store.ref("d", DETECTION.pseudo_stage, "0" * 32)
    with store.writer(shard) as w:
        for name, data in DETECTION.shard_files(boxes, stats).items():
            w.write_bytes(name, data)
    ranking = store.ref("d", "ranking", "1" * 32)
    rows = [
        {"image_id": i, "image_uri": "u", "stability": s, "rank": r, "reliable": r < 2}
        for r, (i, s) in enumerate([("sub/c.jpg", 0.9), ("a.jpg", 0.8), ("b.jpg", 0.3), ("d.jpg", 0.1)])
    ]
    store.write(ranking, {"ranking.parquet": to_parquet_bytes(table_from_rows(rows, RANKING), RANKING)})
    pseudo = DETECTION.open_pseudo(store, [shard], META)
    return store, pseudo, ranking, tmp_path


def test_coco_export_loads_in_pycocotools_with_scores_and_the_sets_category_ids(run):
    from pycocotools.coco import COCO

    store, pseudo, _, tmp = run
    written = export_labels(store, pseudo, META, "coco", str(tmp / "out.json"))
    assert written == {"format": "coco", "path": str(tmp / "out.json"), "images": 4, "labels": 4}
    coco = COCO(str(tmp / "out.json"))
    assert {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())} == {3: "cat", 7: "dog"}
    (a,) = coco.loadImgs([i for i in coco.getImgIds() if coco.imgs[i]["file_name"] == "a.jpg"])
    assert (a["width"], a["height"], a["image_uri"]) == (100, 200, "s3://b/u/a.jpg")
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[a["id"]]))
    assert [(x["category_id"], x["bbox"]) for x in anns] == [
        (3, [10.0, 20.0, 20.0, 40.0]),
        (7, [10.0, 20.0, 20.0, 40.0]),
    ]
    assert [x["score"] for x in anns] == pytest.approx([0.9, 0.5])  # stored as float32
    assert coco.loadImgs([i for i in coco.getImgIds() if coco.imgs[i]["file_name"] == "d.jpg"])  # no box, kept


def test_label_studio_tasks_hold_percent_boxes_with_scores(run):
    store, pseudo, _, tmp = run
    export_labels(store, pseudo, META, "label-studio", str(tmp / "ls.json"), image_url_prefix="http://host/img/")
    tasks = json.load(open(tmp / "ls.json"))
    a = next(t for t in tasks if t["data"]["image_id"] == "a.jpg")
    assert a["data"]["image"] == "http://host/img/a.jpg"
    (prediction,) = a["predictions"]
    assert prediction["score"] == pytest.approx(0.7)  # mean of the image's box scores
    first = prediction["result"][0]
    assert first["type"] == "rectanglelabels" and first["from_name"] == "label" and first["to_name"] == "image"
    # x1 10 of width 100 -> 10 %, y1 20 of height 200 -> 10 %, 20 x 40 px -> 20 % x 20 %
    assert first["value"] == {
        "x": 10.0,
        "y": 10.0,
        "width": 20.0,
        "height": 20.0,
        "rotation": 0,
        "rectanglelabels": ["cat"],
    }
    assert first["score"] == pytest.approx(0.9) and (first["original_width"], first["original_height"]) == (100, 200)


def test_selections_ranking_half_lowest_scores_and_one_class(run):
    store, pseudo, ranking, tmp = run
    out = str(tmp / "s.json")
    assert export_labels(store, pseudo, META, "coco", out, ranking=ranking, group="unreliable")["images"] == 2
    assert {i["file_name"] for i in json.load(open(out))["images"]} == {"b.jpg", "d.jpg"}
    export_labels(store, pseudo, META, "coco", out, lowest=2)  # d (no box: 0) and b (0.6)
    assert {i["file_name"] for i in json.load(open(out))["images"]} == {"b.jpg", "d.jpg"}
    written = export_labels(store, pseudo, META, "coco", out, class_name="dog")
    doc = json.load(open(out))
    assert written["labels"] == 2 and {i["file_name"] for i in doc["images"]} == {"a.jpg", "b.jpg"}
    assert {a["category_id"] for a in doc["annotations"]} == {7}


def test_every_impossible_export_names_why(run):
    store, pseudo, _, tmp = run
    out = str(tmp / "x.json")
    with pytest.raises(ExportError, match="export as \\['coco', 'label-studio'\\], not 'png'"):
        export_labels(store, pseudo, META, "png", out)
    with pytest.raises(ExportError, match="needs an ST\\+\\+ ranking"):
        export_labels(store, pseudo, META, "coco", out, group="reliable")
    with pytest.raises(ExportError, match="'bird' is not one of the labeled set's classes"):
        export_labels(store, pseudo, META, "coco", out, class_name="bird")
    with pytest.raises(ExportError, match="lowest must be at least 1"):
        export_labels(store, pseudo, META, "coco", out, lowest=0)
    with pytest.raises(ExportError, match="is a folder; name the file"):
        export_labels(store, pseudo, META, "coco", str(tmp))


def test_png_label_maps_are_written_one_per_image(tmp_path):
    store = ArtifactStore(str(tmp_path / "store"))
    masks = {"x.jpg": np.array([[0, 1], [255, 1]], np.uint8), "dir/y.png": np.zeros((3, 2), np.uint8)}
    labels = list(masks.items())
    stats = [mask_stats({"image_id": i, "image_uri": i}, m, np.ones(m.shape, np.float32), "") for i, m in labels]
    ref = store.ref("d", SEGMENTATION.pseudo_stage, "0" * 32)
    with store.writer(ref) as w:
        for name, data in SEGMENTATION.shard_files(labels, stats).items():
            w.write_bytes(name, data)
    pseudo = SEGMENTATION.open_pseudo(store, [ref], {"classes": ["bg", "fg"]})
    written = export_labels(store, pseudo, {"classes": ["bg", "fg"]}, "png", str(tmp_path / "maps"))
    pseudo.close()
    assert written["images"] == 2
    assert np.array_equal(np.asarray(Image.open(tmp_path / "maps" / "x.png")), masks["x.jpg"])
    assert np.array_equal(np.asarray(Image.open(tmp_path / "maps" / "dir" / "y.png")), masks["dir/y.png"])
    with pytest.raises(ExportError, match="new or empty folder"):  # never mixed with an earlier export
        export_labels(
            store,
            SEGMENTATION.open_pseudo(store, [ref], {"classes": ["bg", "fg"]}),
            {"classes": ["bg", "fg"]},
            "png",
            str(tmp_path / "maps"),
        )


def test_selftrain_export_and_the_export_task_write_the_selection(run, capsys):
    from app.cli import main
    from tasks.export_labels import export_labels as export_task

    store, pseudo, ranking, tmp = run
    labeled = store.ref("d", DETECTION.dataset_stage, "f" * 32)
    store.write(labeled, {"coco.json": b"{}"}, meta=META)
    folder = tmp / "report"
    folder.mkdir()
    report = {
        "dataset": "d",
        "task": "detection",
        "artifacts": {"labeled": labeled.uri},
        "pseudo_shards": [r.uri for r in pseudo.shards],
        "ranking": {"uri": ranking.uri},
    }
    (folder / "report.json").write_text(json.dumps(report))
    out = tmp / "unreliable.json"
    assert main(["export", str(folder), "--format", "label-studio", "--images", "unreliable", "--out", str(out)]) == 0
    assert "exported 1 pseudo labels of 2 images as label-studio" in capsys.readouterr().out
    assert sorted(t["data"]["image_id"] for t in json.load(open(out))) == ["b.jpg", "d.jpg"]
    assert main(["export", str(folder), "--format", "png", "--out", str(tmp / "m")]) == 2
    assert "not 'png'" in capsys.readouterr().err
    assert main(["labels", str(tmp / "store")]) == 2  # a folder without report.json and not a report URI
    assert "neither a report folder" in capsys.readouterr().err
    written = export_task.fn(store.url, pseudo.shards, labeled, "coco", str(tmp / "t.json"), lowest=1)
    assert written["images"] == 1 and json.load(open(tmp / "t.json"))["images"][0]["file_name"] == "d.jpg"


def test_image_urls_join_the_prefix_and_quote_the_id():
    from selftrain.export import image_url

    assert image_url("http://host/img", "dir/a b.jpg") == "http://host/img/dir/a%20b.jpg"
    assert image_url("http://host/img/", "a.jpg") == "http://host/img/a.jpg"
    assert image_url("/data/local-files/?d=", "dir/a.jpg") == "/data/local-files/?d=dir/a.jpg"


def test_two_images_that_would_share_a_label_map_name_are_refused(tmp_path):
    store = ArtifactStore(str(tmp_path / "store"))
    labels = [("x.jpg", np.zeros((2, 2), np.uint8)), ("x.png", np.ones((2, 2), np.uint8))]
    stats = [mask_stats({"image_id": i, "image_uri": i}, m, np.ones(m.shape, np.float32), "") for i, m in labels]
    ref = store.ref("d", SEGMENTATION.pseudo_stage, "0" * 32)
    with store.writer(ref) as w:
        for name, data in SEGMENTATION.shard_files(labels, stats).items():
            w.write_bytes(name, data)
    pseudo = SEGMENTATION.open_pseudo(store, [ref], {"classes": ["bg", "fg"]})
    with pytest.raises(ExportError, match="'x.jpg' and 'x.png' would both be written as 'x.png'"):
        export_labels(store, pseudo, {"classes": ["bg", "fg"]}, "png", str(tmp_path / "maps"))
    with pytest.raises(ExportError, match="applies to label-studio tasks, not to 'png'"):
        export_labels(
            store, pseudo, {"classes": ["bg", "fg"]}, "png", str(tmp_path / "m2"), image_url_prefix="http://h"
        )
    pseudo.close()


def test_label_map_names_stay_inside_the_export_folder():
    """A pool given as a list of images has URLs or absolute paths for ids: their label maps
    keep the path under the bucket or root, inside the export folder (an absolute id once
    wrote the label map over its own image)."""
    from selftrain.export import label_map_name

    assert label_map_name("sub/c.jpg") == "sub/c.png"
    assert label_map_name("s3://bucket/pool/a.JPG") == "bucket/pool/a.png"
    assert label_map_name("/data/pool/a.png") == "data/pool/a.png"
    assert label_map_name("x\\y.tif") == "x/y.png"
    with pytest.raises(ExportError, match=r"image id '../a.png' names no file inside the export folder"):
        label_map_name("../a.png")
