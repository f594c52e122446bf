"""Reviewed pseudo labels back as labeled data: a corrected COCO or Label Studio export merged
with the labeled set (hand-checked file names, ids and boxes), every mismatch refused naming
the item, and the unlabeled listing leaving out the images that are labeled now. Real files,
a real store."""

import json

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from selftrain.corrections import CorrectionError, common_root, import_corrections
from storage.schemas import UNLABELED_IMAGES, to_parquet_bytes
from storage.store import ArtifactStore

META = {"classes": ["cat", "dog"], "category_ids": [3, 7]}


@pytest.fixture
def run(tmp_path):
    """A labeled set of one image under images/labeled, three unlabeled images under
    images/unlabeled (40x30 px), registered and listed in a real store."""
    root = tmp_path / "images"
    for folder, names in (("labeled", ["l.png"]), ("unlabeled", ["a.png", "b.png", "sub/c.png"])):
        for n in names:
            (root / folder / n).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(root / folder / n)
    store = ArtifactStore(str(tmp_path / "store"))
    labeled = store.ref("d", "dataset", "1" * 32)
    coco = {
        "images": [{"id": 1, "file_name": "labeled/l.png", "width": 40, "height": 30}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [1, 2, 3, 4], "area": 12, "iscrowd": 0}],
        "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
    }
    store.write(labeled, {"coco.json": json.dumps(coco).encode()}, meta=dict(META, image_root=str(root)))
    rows = [
        {"image_id": n, "image_uri": str(root / "unlabeled" / n), "size": 1} for n in ("a.png", "b.png", "sub/c.png")
    ]
    unlabeled = store.ref("d", "unlabeled", "2" * 32)
    store.write(unlabeled, {"images.parquet": to_parquet_bytes(pa.Table.from_pylist(rows), UNLABELED_IMAGES)})
    return store, labeled, unlabeled, root, tmp_path


def coco_file(tmp_path, images, annotations):
    path = tmp_path / "reviewed.json"
    path.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 3, "name": "cat"}]})
    )
    return str(path)


def test_a_corrected_coco_export_joins_the_labeled_set_under_one_root(run):
    store, labeled, unlabeled, root, tmp = run
    images = [
        {"id": 10, "file_name": "a.png", "width": 40, "height": 30},
        {"id": 11, "file_name": "sub/c.png", "width": 40, "height": 30},  # reviewed: no object
    ]
    boxes = [{"id": 5, "image_id": 10, "category_id": 3, "bbox": [-0.5, 0, 10, 30.8], "score": 0.4, "iscrowd": 1}]
    done = import_corrections(store, labeled, unlabeled, coco_file(tmp, images, boxes), "coco", str(tmp / "m.json"))
    assert done["image_root"] == str(root) and done["images"] == 3
    assert done["boxes_with_scores"] == 1  # the export's score is still there: the CLI asks to check the file
    assert (done["added_images"], done["added_boxes"], done["labeled_images"]) == (2, 1, 1)
    merged = json.load(open(tmp / "m.json"))
    assert [(i["id"], i["file_name"]) for i in merged["images"]] == [
        (1, "labeled/l.png"),
        (2, "unlabeled/a.png"),
        (3, "unlabeled/sub/c.png"),
    ]
    # the labeled box kept; the corrected one clipped to the 40x30 image (1 px of rounding allowed)
    assert [(a["id"], a["image_id"], a["category_id"], a["bbox"], a["iscrowd"]) for a in merged["annotations"]] == [
        (1, 1, 7, [1, 2, 3, 4], 0),
        (2, 2, 3, [0.0, 0.0, 9.5, 30.0], 1),  # a crowd region stays one
    ]
    assert merged["categories"] == [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]


@pytest.mark.parametrize(
    ("images", "annotations", "message"),
    [
        ([{"id": 1, "file_name": "zz.png", "width": 40, "height": 30}], [], "'zz.png' is not one of the run's"),
        (
            [{"id": 1, "file_name": "a.png", "width": 40, "height": 30}],
            [{"image_id": 1, "category_id": 9, "bbox": [0, 0, 2, 2]}],
            "image 'a.png': annotation 0 has category id 9, not a class",
        ),
        (
            [{"id": 1, "file_name": "a.png", "width": 40, "height": 30}],
            [{"image_id": 1, "category_id": 3, "bbox": [30, 0, 20, 5]}],
            r"image 'a.png': annotation 0 \[x 30, y 0, w 20, h 5\] lies outside the 40x30 image",
        ),
        (
            [{"id": 1, "file_name": "a.png", "width": 40, "height": 30}],
            [{"image_id": 1, "category_id": 3, "bbox": [3, 3, 0, 5]}],
            "annotation 0 .* is empty",
        ),
        (
            [{"id": 1, "file_name": "a.png", "width": 40, "height": 30}],
            [{"image_id": 2, "category_id": 3, "bbox": [3, 3, 1, 5]}],
            "annotation 0 names image id 2, not in 'images'",
        ),
        (  # the same image twice under two ids: it would be both labeled and empty
            [
                {"id": 1, "file_name": "a.png", "width": 40, "height": 30},
                {"id": 2, "file_name": "a.png", "width": 40, "height": 30},
            ],
            [],
            "image 'a.png' is listed twice",
        ),
        (  # the run's image is 40x30: a size from the file would let a box outside it pass
            [{"id": 1, "file_name": "a.png", "width": 400, "height": 30}],
            [{"id": 7, "image_id": 1, "category_id": 3, "bbox": [300, 0, 20, 5]}],
            r"image 'a.png' is given as 400x30 px, but the image is 40x30",
        ),
    ],
)
def test_every_mismatch_is_refused_naming_the_item(run, images, annotations, message):
    store, labeled, unlabeled, _, tmp = run
    with pytest.raises(CorrectionError, match=message):
        import_corrections(store, labeled, unlabeled, coco_file(tmp, images, annotations), "coco", str(tmp / "m.json"))
    assert not (tmp / "m.json").exists()  # nothing half-written


def ls_task(image_id, boxes, cancelled=False, w=40, h=30):
    result = [
        {
            "type": "rectanglelabels",
            "original_width": w,
            "original_height": h,
            "value": {"x": x, "y": y, "width": bw, "height": bh, "rotation": 0, "rectanglelabels": [label]},
        }
        for label, x, y, bw, bh in boxes
    ]
    return {
        "data": {"image": f"http://h/{image_id}", "image_id": image_id},
        "annotations": [{"result": result, "was_cancelled": cancelled}],
        "predictions": [{"result": []}],
    }


def test_a_label_studio_export_brings_the_reviewed_tasks_and_leaves_the_others(run):
    store, labeled, unlabeled, _, tmp = run
    tasks = [
        ls_task("a.png", [("dog", 10.0, 20.0, 50.0, 50.0)]),  # percent of 40x30 -> 4, 6, 20, 15 px
        ls_task("b.png", [("cat", 0, 0, 10, 10)], cancelled=True),  # skipped by the reviewer
        {"data": {"image": "http://h/sub/c.png", "image_id": "sub/c.png"}, "annotations": [], "predictions": []},
    ]
    path = tmp / "ls.json"
    path.write_text(json.dumps(tasks))
    done = import_corrections(store, labeled, unlabeled, str(path), "label-studio", str(tmp / "m.json"))
    assert (done["added_images"], done["added_boxes"], done["unreviewed"]) == (1, 1, 2)
    merged = json.load(open(tmp / "m.json"))
    assert merged["images"][1]["file_name"] == "unlabeled/a.png"
    assert merged["annotations"][1]["category_id"] == 7 and merged["annotations"][1]["bbox"] == [4.0, 6.0, 20.0, 15.0]
    path.write_text(json.dumps([ls_task("a.png", [("bird", 0, 0, 5, 5)])]))
    with pytest.raises(CorrectionError, match=r"task 0 \(image 'a.png'\): result 0 is labeled \['bird'\], not one"):
        import_corrections(store, labeled, unlabeled, str(path), "label-studio", str(tmp / "m.json"))
    path.write_text(json.dumps([ls_task("a.png", [("cat", 90, 0, 20, 5)])]))
    with pytest.raises(CorrectionError, match="image 'a.png'.* lies outside the 40x30 image"):
        import_corrections(store, labeled, unlabeled, str(path), "label-studio", str(tmp / "m.json"))
    two = ls_task("a.png", [("cat", 0, 0, 5, 5)])
    two["annotations"].append({"result": [], "was_cancelled": False})  # a second annotator emptied it
    two["id"] = 41
    path.write_text(json.dumps([two]))
    with pytest.raises(CorrectionError, match=r"task 41 \(image 'a.png'\) has 2 annotations; keep the one"):
        import_corrections(store, labeled, unlabeled, str(path), "label-studio", str(tmp / "m.json"))
    polygon = ls_task("a.png", [("cat", 0, 0, 5, 5)])
    polygon["annotations"][0]["result"][0]["type"] = "polygonlabels"
    path.write_text(json.dumps([polygon]))
    with pytest.raises(CorrectionError, match="is of type 'polygonlabels'; only rectanglelabels boxes come back"):
        import_corrections(store, labeled, unlabeled, str(path), "label-studio", str(tmp / "m.json"))
    path.write_text(json.dumps([ls_task("a.png", [("cat", 0, 0, 5, 5)], w=400)]))
    with pytest.raises(CorrectionError, match="is given as 400x30 px, but the image is 40x30"):
        import_corrections(store, labeled, unlabeled, str(path), "label-studio", str(tmp / "m.json"))


def test_images_in_two_places_have_no_common_root():
    assert common_root(["s3://b/x/l/1.png", "s3://b/x/u/2.png"]) == "s3://b/x"
    assert common_root(["/d/images/labeled/1.png", "/d/images/unlabeled/s/2.png"]) == "/d/images"
    with pytest.raises(CorrectionError, match="different places"):
        common_root(["s3://a/x/1.png", "s3://b/x/2.png"])


def test_the_unlabeled_listing_leaves_out_images_that_are_labeled_now(run, tmp_path):
    from storage.store import ArtifactStore as Store
    from tasks.list_unlabeled import list_unlabeled

    store, labeled, unlabeled, root, tmp = run
    coco = store.read_json(labeled, "coco.json")
    coco["images"].append({"id": 2, "file_name": "unlabeled/a.png", "width": 40, "height": 30})
    merged = Store(store.url).ref("d", "dataset", "3" * 32)
    store.write(merged, {"coco.json": json.dumps(coco).encode()}, meta=dict(META, image_root=str(root)))
    every = list_unlabeled.fn(store.url, "d", str(root / "unlabeled"))
    rest = list_unlabeled.fn(store.url, "d", str(root / "unlabeled"), merged)
    assert store.manifest(every).meta["num_images"] == 3 and store.manifest(rest).meta["num_images"] == 2
    # nothing left out: the same listing, the same key as without a labeled set
    assert list_unlabeled.fn(store.url, "d", str(root / "unlabeled"), labeled) == every


def test_a_category_renamed_in_the_reviewed_file_is_refused(run):
    store, labeled, unlabeled, _, tmp = run
    path = tmp / "renamed.json"
    images = [{"id": 1, "file_name": "a.png", "width": 40, "height": 30}]
    path.write_text(json.dumps({"images": images, "annotations": [], "categories": [{"id": 3, "name": "shrub"}]}))
    with pytest.raises(CorrectionError, match="category id 3 is named 'shrub'; in the labeled set it is 'cat'"):
        import_corrections(store, labeled, unlabeled, str(path), "coco", str(tmp / "m.json"))
