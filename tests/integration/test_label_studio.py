"""Pseudo labels to a real Label Studio server and back: the tasks `selftrain export --format
label-studio` writes are imported through label-studio-sdk into a server the test starts on
127.0.0.1 (its own virtual environment), their predictions read back unchanged; a review there
(one box moved, one task skipped, the rest untouched) exported as Label Studio's JSON comes back
through `import_corrections` as labeled data."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from selftrain.corrections import import_corrections
from selftrain.export import export_labels
from selftrain.kinds import DETECTION
from storage.schemas import UNLABELED_IMAGES, to_parquet_bytes
from storage.store import ArtifactStore

pytestmark = pytest.mark.integration

META = {"classes": ["cat", "dog"], "category_ids": [3, 7]}
REVIEW = os.path.join(os.path.dirname(__file__), "label_studio_review.py")


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory):
    from tests.label_studio import LabelStudioServer

    server = LabelStudioServer(str(tmp_path_factory.mktemp("label-studio"))).start()
    yield server
    server.stop()


def box(image_id, uri, label, x1, y1, x2, y2, score):
    return dict(image_id=image_id, image_uri=uri, label=label, x1=x1, y1=y1, x2=x2, y2=y2, score=score)


def test_tasks_go_to_label_studio_and_the_review_comes_back_as_labeled_data(label_studio, tmp_path):
    root = tmp_path / "images"
    names = ["a.png", "b.png", "c.png"]
    for folder, files in (("labeled", ["l.png"]), ("unlabeled", names)):
        (root / folder).mkdir(parents=True)
        for n in files:
            Image.fromarray(np.zeros((50, 80, 3), np.uint8)).save(root / folder / n)  # 80 x 50 px
    store = ArtifactStore(str(tmp_path / "store"))
    labeled = store.ref("d", DETECTION.dataset_stage, "1" * 32)
    coco = {
        "images": [{"id": 1, "file_name": "labeled/l.png", "width": 80, "height": 50}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 1, 5, 5], "area": 25, "iscrowd": 0}],
        "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
    }
    store.write(labeled, {"coco.json": json.dumps(coco).encode()}, meta=dict(META, image_root=str(root)))
    uris = {n: str(root / "unlabeled" / n) for n in names}
    unlabeled = store.ref("d", "unlabeled", "2" * 32)
    rows = [{"image_id": n, "image_uri": u, "size": 1} for n, u in uris.items()]
    store.write(unlabeled, {"images.parquet": to_parquet_bytes(pa.Table.from_pylist(rows), UNLABELED_IMAGES)})
    boxes = [
        box("a.png", uris["a.png"], 7, 8.0, 5.0, 48.0, 30.0, 0.9),
        box("a.png", uris["a.png"], 3, 0.0, 0.0, 20.0, 10.0, 0.6),
        box("b.png", uris["b.png"], 3, 4.0, 4.0, 12.0, 12.0, 0.7),
    ]
    stats = [
        dict(image_id=n, image_uri=uris[n], width=80, height=50, status="ok", error=None, num_boxes=k, mean_score=None)
        for n, k in (("a.png", 2), ("b.png", 1), ("c.png", 0))
    ]
    shard = store.ref("d", DETECTION.pseudo_stage, "0" * 32)
    with store.writer(shard) as w:
        for name, data in DETECTION.shard_files(boxes, stats).items():
            w.write_bytes(name, data)
    pseudo = DETECTION.open_pseudo(store, [shard], META)
    tasks_file = tmp_path / "tasks.json"
    export_labels(
        store, pseudo, META, "label-studio", str(tasks_file), image_url_prefix="http://images.local/unlabeled"
    )
    ours = json.load(open(tasks_file))

    out = tmp_path / "review.json"
    label_studio.run(REVIEW, str(tasks_file), str(out))
    review = json.load(open(out))
    # the server holds exactly the predictions we sent: boxes in percent, classes, scores
    assert [t["image_id"] for t in review["read_back"]] == names
    for sent, got in zip(sorted(ours, key=lambda t: t["data"]["image_id"]), review["read_back"], strict=True):
        (prediction,) = got["predictions"]
        assert prediction["score"] == pytest.approx(sent["predictions"][0]["score"])
        assert [(r["value"], r["score"]) for r in prediction["result"]] == [
            (r["value"], pytest.approx(r["score"])) for r in sent["predictions"][0]["result"]
        ]
    first = review["read_back"][0]["predictions"][0]["result"][0]
    assert first["value"]["rectanglelabels"] == ["dog"] and first["value"]["x"] == pytest.approx(10.0)  # 8 / 80

    exported = tmp_path / "label-studio-export.json"
    exported.write_text(json.dumps(review["export"]))
    merged = tmp_path / "merged.json"
    done = import_corrections(store, labeled, unlabeled, str(exported), "label-studio", str(merged))
    # a.png reviewed (its dog moved to x 10 %, y 20 %: 8, 10 px), b.png skipped, c.png never opened
    assert (done["added_images"], done["added_boxes"], done["unreviewed"]) == (1, 1, 2)
    data = json.load(open(merged))
    assert [im["file_name"] for im in data["images"]] == ["labeled/l.png", "unlabeled/a.png"]
    (moved,) = [a for a in data["annotations"] if a["image_id"] == 2]
    assert moved["category_id"] == 7 and moved["bbox"] == pytest.approx([8.0, 10.0, 40.0, 25.0])
