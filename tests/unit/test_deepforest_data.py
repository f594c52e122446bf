"""The DeepForest benchmark preparation: grid and clipping rules by hand, then a real (small) build."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from selftrain.datasets import deepforest as df

# ---------------------------------------------------------------------------------------------------------
# Pure rules, hand-computed
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "tile", "expected"),
    [
        (600, 256, [0, 256, 344]),  # ceil(600/256) = 3, last moved back to 600 - 256
        (512, 256, [0, 256]),  # exact multiple: no overlap
        (513, 256, [0, 256, 257]),  # one pixel over: a nearly duplicate last tile
        (256, 256, [0]),
        (100, 256, [0]),  # smaller than a tile: one tile, as large as the image
        (2299, 256, [0, 256, 512, 768, 1024, 1280, 1536, 1792, 2043]),  # scene 1 columns
        (1035, 256, [0, 256, 512, 768, 779]),  # scene 2 rows on this grid: 245 px overlap (val uses partition)
    ],
)
def test_tile_offsets(size, tile, expected):
    offsets = df.tile_offsets(size, tile)
    assert offsets == expected
    assert offsets[-1] + min(tile, size) == size  # ends exactly at the border


def test_tile_offsets_rejects_nonsense():
    with pytest.raises(ValueError):
        df.tile_offsets(0, 256)
    with pytest.raises(ValueError):
        df.tile_offsets(600, 0)


@pytest.mark.parametrize(
    ("size", "tile", "expected"),
    [
        (1035, 256, [(0, 256), (256, 256), (512, 256), (768, 267)]),  # 4 * 256 + 11: 11 < 128 absorbed
        (1249, 256, [(0, 256), (256, 256), (512, 256), (768, 256), (1024, 225)]),  # 4 * 256 + 225: own tile
        (512, 256, [(0, 256), (256, 256)]),  # exact multiple
        (256, 256, [(0, 256)]),
        (300, 256, [(0, 300)]),  # 44 < 128: one tile taller than `tile`
        (100, 256, [(0, 100)]),  # smaller than a tile: one tile, as large as the image
        (384, 256, [(0, 256), (256, 128)]),  # remainder exactly tile / 2: its own tile
        (383, 256, [(0, 383)]),  # one pixel less: absorbed
        (8, 5, [(0, 5), (5, 3)]),  # odd tile: 3 >= 2.5
        (7, 5, [(0, 7)]),  # 2 < 2.5
    ],
)
def test_partition_spans(size, tile, expected):
    spans = df.partition_spans(size, tile)
    assert spans == expected
    ends = [start + length for start, length in spans]
    assert spans[0][0] == 0 and ends[-1] == size
    assert [start for start, _ in spans[1:]] == ends[:-1]  # contiguous, no overlap, no gap


def test_partition_spans_rejects_nonsense():
    with pytest.raises(ValueError):
        df.partition_spans(0, 256)
    with pytest.raises(ValueError):
        df.partition_spans(600, 0)


def test_voc_to_pixel_boxes():
    # 1-based inclusive -> 0-based edges: xmin 1 -> x1 0; xmax stays; clipped to a 100x50 image.
    voc = np.array([[1, 1, 10, 20], [90, 40, 120, 60], [101, 5, 110, 9]])
    out = df.voc_to_pixel_boxes(voc, 100, 50)
    assert out.tolist() == [[0, 0, 10, 20], [89, 39, 100, 50]]  # the third lies wholly outside: dropped


def test_clip_boxes_visibility_rule():
    # Tile [100, 200) x [50, 150); boxes in image coordinates.
    boxes = np.array(
        [
            [110, 60, 130, 80],  # 0: wholly inside -> kept as is, shifted by (-100, -50)
            [90, 60, 110, 80],  # 1: 10 of 20 px wide inside -> 0.5 visible: kept (>= 0.5), clipped
            [91, 60, 110, 80],  # 2: 10 of 19 px inside = 0.526 -> kept
            [89, 60, 110, 80],  # 3: 10 of 21 px inside = 0.476 -> dropped
            [190, 140, 210, 160],  # 4: 10x10 of 20x20 = 0.25 -> dropped
            [0, 0, 100, 50],  # 5: touches the corner only, nothing inside -> dropped
            [120, 60, 120, 80],  # 6: zero area -> dropped
            [150, 100, 230, 200],  # 7: 50x50 of 80x100 = 0.3125 -> dropped
        ],
        dtype=float,
    )
    clipped, idx = df.clip_boxes(boxes, 100, 50, 100, 100, 0.5)
    assert idx.tolist() == [0, 1, 2]
    assert clipped.tolist() == [[10, 10, 30, 30], [0, 10, 10, 30], [0, 10, 10, 30]]

    clipped, idx = df.clip_boxes(boxes, 100, 50, 100, 100, 0.3)
    assert idx.tolist() == [0, 1, 2, 3, 7]
    assert clipped[-1].tolist() == [50, 50, 100, 100]

    clipped, idx = df.clip_boxes(boxes, 100, 50, 100, 100, 1.0)
    assert idx.tolist() == [0]

    clipped, idx = df.clip_boxes(np.zeros((0, 4)), 0, 0, 10, 10, 0.5)
    assert clipped.shape == (0, 4) and idx.shape == (0,)

    with pytest.raises(ValueError):
        df.clip_boxes(boxes, 0, 0, 10, 10, 0.0)


def test_assign_once_keeps_each_box_in_the_tile_holding_most_of_it():
    # Boxes already clipped to three tiles (tile coordinates); box_ids index the source boxes.
    def tile(name, boxes, ids):
        return {"name": name, "boxes": np.array(boxes, dtype=float).reshape(-1, 4), "box_ids": np.array(ids)}

    tiles = [
        tile("t0", [[0, 0, 4, 4], [6, 0, 8, 2], [4, 0, 8, 4]], [0, 1, 2]),
        tile("t1", [[0, 0, 2, 2], [0, 0, 2, 4], [0, 0, 4, 4]], [1, 2, 3]),
        tile("t2", [[0, 0, 1, 2]], [2]),
    ]
    # box 0: only in t0. box 1: 4 px^2 in t0 and t1 (tie) -> t0, the first. box 2: 16 / 8 / 2 -> t0.
    # box 3: only in t1. box 4: in no tile.
    out, multi = df.assign_once(tiles, 5)
    assert multi == 2
    assert [t["box_ids"].tolist() for t in out] == [[0, 1, 2], [3], []]
    assert out[1]["boxes"].tolist() == [[0, 0, 4, 4]] and out[2]["boxes"].shape == (0, 4)
    assert [t["name"] for t in out] == ["t0", "t1", "t2"]
    # A larger part in a later tile wins.
    tiles[1]["boxes"][1] = [0, 0, 8, 4]  # box 2: 32 px^2 in t1
    out, multi = df.assign_once(tiles, 5)
    assert [t["box_ids"].tolist() for t in out] == [[0, 1], [2, 3], []]
    assert tiles[0]["box_ids"].tolist() == [0, 1, 2]  # the input is not modified


def test_val_partition_counts_a_tree_cut_by_a_border_once_or_not_at_all():
    # A 16 x 8 image cut by partition_spans(16, 8) into tiles [0, 8) and [8, 16) along x.
    image = np.zeros((8, 16, 3), dtype=np.uint8)
    boxes = np.array(
        [
            [2, 2, 6, 6],  # 0: inside the left tile
            [6, 1, 10, 5],  # 1: exactly half in each tile -> both pass 0.5; kept in the left (first) only
            [5, 1, 10, 5],  # 2: 3/5 left, 2/5 right -> left
            [7, 0, 11, 4],  # 3: 1/4 left, 3/4 right -> right
        ],
        dtype=float,
    )
    spans = df.partition_spans(16, 8)
    assert spans == [(0, 8), (8, 8)]
    tiles, multi = df.assign_once(df._tiles(image, boxes, "s", [(0, 8)], spans, 0.5), len(boxes))
    assert multi == 1
    assert [t["box_ids"].tolist() for t in tiles] == [[0, 1, 2], [3]]
    assert tiles[0]["boxes"].tolist() == [[2, 2, 6, 6], [6, 1, 8, 5], [5, 1, 8, 5]]
    assert tiles[1]["boxes"].tolist() == [[0, 0, 3, 4]]
    assert [(t["width"], t["height"], t["offset"]) for t in tiles] == [(8, 8, [0, 0]), (8, 8, [8, 0])]
    # A stricter rule loses the cut trees rather than counting them twice.
    tiles, multi = df.assign_once(df._tiles(image, boxes, "s", [(0, 8)], spans, 0.7), len(boxes))
    assert multi == 0
    assert [t["box_ids"].tolist() for t in tiles] == [[0], [3]]
    assert df._unassigned(tiles, len(boxes)) == 2


def test_missing_data_names_the_path_and_the_setup_script(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"no_such_package_for_selftrain.*deploy/setup\.sh.*--no-deps"):
        df.deepforest_data_dir("no_such_package_for_selftrain")
    with pytest.raises(FileNotFoundError, match=r"2019_YELL.*deploy/setup\.sh.*--no-deps") as err:
        df.load_scene(str(tmp_path), df.TRAIN_SCENE)
    assert str(tmp_path) in str(err.value)
    monkeypatch.setattr(df, "DATA_PACKAGE", "no_such_package_for_selftrain")
    with pytest.raises(FileNotFoundError, match="deploy/setup.sh"):
        df.prepare(tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------------------
# A real build from the installed deepforest data
# ---------------------------------------------------------------------------------------------------------

SMALL = dict(tile=256, num_labeled=4, max_unlabeled=6, max_val=3)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("deepforest")
    split = df.prepare(str(root / "a"), **SMALL)
    return split


@pytest.fixture(scope="module")
def built_full_val(tmp_path_factory):
    root = tmp_path_factory.mktemp("deepforest_val")
    return df.prepare(str(root / "v"), tile=256, num_labeled=1, max_unlabeled=0)


def _coco(path):
    with open(path) as f:
        return json.load(f)


def test_scene_sources_match_the_documented_facts():
    data = df.deepforest_data_dir()
    image, boxes = df.load_scene(data, df.TRAIN_SCENE)
    assert image.shape == (2472, 2299, 3) and image.dtype == np.uint8
    assert len(boxes) == 574
    assert boxes.min() >= 0 and boxes[:, 2].max() <= 2299 and boxes[:, 3].max() <= 2472
    image, boxes = df.load_scene(data, df.VAL_SCENE)
    assert image.shape == (1035, 1249, 3) and len(boxes) == 279


def test_prepare_layout_and_counts(built):
    assert isinstance(built, df.DeepForestSplit)
    assert built.image_root == os.path.join(built.root, "images")
    assert built.unlabeled_dir == os.path.join(built.image_root, "unlabeled")
    lab, unl, val = _coco(built.labeled_json), _coco(built.unlabeled_gt_json), _coco(built.val_json)
    assert [len(lab["images"]), len(unl["images"]), len(val["images"])] == [4, 6, 3]
    assert sorted(os.listdir(built.unlabeled_dir)) == sorted(os.path.basename(i["file_name"]) for i in unl["images"])
    for coco in (lab, unl, val):
        assert coco["categories"] == [{"id": 1, "name": "tree"}]
        assert [i["id"] for i in coco["images"]] == list(range(1, len(coco["images"]) + 1))
        assert [a["id"] for a in coco["annotations"]] == list(range(1, len(coco["annotations"]) + 1))
    ready = _coco(os.path.join(built.root, "READY.json"))
    assert ready["counts"]["labeled"] == {"tiles": 4, "boxes": len(lab["annotations"])}
    assert ready["counts"]["scenes"][df.TRAIN_SCENE]["tiles"] == 9 * 10
    assert ready["counts"]["scenes"][df.VAL_SCENE]["tiles"] == 4 * 5  # partition: 4 rows x 5 columns
    # The val tiles are the first three of scene 2 in row-major order.
    assert [i["file_name"] for i in val["images"]] == [f"val/{df.VAL_SCENE}_r0_c{c}.png" for c in range(3)]
    assert [i["offset"] for i in val["images"]] == [[0, 0], [256, 0], [512, 0]]
    # No temporary siblings are left behind.
    assert os.listdir(os.path.dirname(built.root)) == ["a"]


@pytest.mark.parametrize("which", ["labeled", "unlabeled", "val", "full_val"])
def test_annotations_are_valid_and_inside_their_images(built, built_full_val, which):
    split = built_full_val if which == "full_val" else built
    path = {
        "labeled": split.labeled_json,
        "unlabeled": split.unlabeled_gt_json,
        "val": split.val_json,
        "full_val": split.val_json,
    }[which]
    coco = _coco(path)
    images = {i["id"]: i for i in coco["images"]}
    for im in coco["images"]:
        with Image.open(os.path.join(split.image_root, im["file_name"])) as pil:
            assert pil.mode == "RGB" and pil.size == (im["width"], im["height"])
        if which in ("labeled", "unlabeled"):
            assert (im["width"], im["height"]) == (256, 256)  # training tiles all have the tile size
    for a in coco["annotations"]:
        im = images[a["image_id"]]
        x, y, w, h = a["bbox"]
        assert all(isinstance(v, float) for v in a["bbox"])
        assert a["category_id"] == 1 and a["iscrowd"] == 0
        assert w > 0 and h > 0 and a["area"] == pytest.approx(w * h)
        assert x >= 0 and y >= 0 and x + w <= im["width"] and y + h <= im["height"]


def test_full_val_partitions_the_scene_and_counts_every_tree_at_most_once(built_full_val):
    val = _coco(built_full_val.val_json)
    image, boxes = df.load_scene(df.deepforest_data_dir(), df.VAL_SCENE)
    assert len(boxes) == 279
    # 1035 = 4 * 256 + 11 (last row 267 px tall), 1249 = 4 * 256 + 225 (last column 225 px wide).
    rows, cols = [0, 256, 512, 768], [0, 256, 512, 768, 1024]
    heights, widths = [256, 256, 256, 267], [256, 256, 256, 256, 225]
    expected = [
        (f"val/{df.VAL_SCENE}_r{r}_c{c}.png", [x0, y0], w, h)
        for r, (y0, h) in enumerate(zip(rows, heights))
        for c, (x0, w) in enumerate(zip(cols, widths))
    ]
    assert [(i["file_name"], i["offset"], i["width"], i["height"]) for i in val["images"]] == expected
    assert sum(i["width"] * i["height"] for i in val["images"]) == 1249 * 1035  # no overlap, no gap
    # Pixels of the odd-sized corner tile are the scene's, losslessly.
    corner = val["images"][-1]
    with Image.open(os.path.join(built_full_val.image_root, corner["file_name"])) as pil:
        assert np.array_equal(np.asarray(pil), image[768:1035, 1024:1249])
    # 277 trees in exactly one tile each; 2 are cut so that no tile holds half of them; 1 tree split
    # exactly in half passed the rule in two tiles and was kept in the first. Before: 348 boxes.
    counts = _coco(os.path.join(built_full_val.root, "READY.json"))["counts"]
    scene = counts["scenes"][df.VAL_SCENE]
    assert len(val["annotations"]) == 277 and counts["val"] == {"tiles": 20, "boxes": 277}
    assert scene["tiles"] == 20 and scene["val_boxes"] == 277
    assert scene["unassigned_boxes"] == 2 and scene["multi_tile_boxes"] == 1
    assert len(val["annotations"]) + scene["unassigned_boxes"] == len(boxes)  # each tree once or lost
    tiles, _ = df.assign_once(
        df._tiles(image, boxes, df.VAL_SCENE, df.partition_spans(1035, 256), df.partition_spans(1249, 256), 0.5),
        len(boxes),
    )
    ids = np.concatenate([t["box_ids"] for t in tiles])
    assert len(ids) == len(np.unique(ids)) == 277


def test_labeled_tiles_all_have_boxes_and_are_disjoint_from_unlabeled(built):
    lab, unl = _coco(built.labeled_json), _coco(built.unlabeled_gt_json)
    with_boxes = {a["image_id"] for a in lab["annotations"]}
    assert with_boxes == {i["id"] for i in lab["images"]}
    names = lambda coco: {os.path.basename(i["file_name"]) for i in coco["images"]}  # noqa: E731
    assert not names(lab) & names(unl)
    offsets = lambda coco: {(i["source"], tuple(i["offset"])) for i in coco["images"]}  # noqa: E731
    assert not offsets(lab) & offsets(unl)


def test_tile_pixels_are_the_scene_pixels(built):
    image, _ = df.load_scene(df.deepforest_data_dir(), df.TRAIN_SCENE)
    im = _coco(built.labeled_json)["images"][0]
    x0, y0 = im["offset"]
    with Image.open(os.path.join(built.image_root, im["file_name"])) as pil:
        assert np.array_equal(np.asarray(pil), image[y0 : y0 + 256, x0 : x0 + 256])  # lossless


def test_deterministic_and_second_call_is_a_no_op(built, tmp_path):
    other = df.prepare(str(tmp_path / "b"), **SMALL)
    for name in ("labeled.json", "unlabeled_gt.json", "val.json"):
        with open(os.path.join(built.root, name), "rb") as f1, open(os.path.join(other.root, name), "rb") as f2:
            assert f1.read() == f2.read(), name

    ready = os.path.join(other.root, "READY.json")
    before = (os.stat(ready).st_mtime_ns, os.stat(other.labeled_json).st_mtime_ns, os.stat(other.root).st_ino)
    assert df.prepare(str(tmp_path / "b"), **SMALL) == other
    after = (os.stat(ready).st_mtime_ns, os.stat(other.labeled_json).st_mtime_ns, os.stat(other.root).st_ino)
    assert before == after


def test_other_parameters_replace_the_folder(tmp_path):
    first = df.prepare(str(tmp_path / "c"), tile=256, num_labeled=2, seed=1, max_unlabeled=1, max_val=1)
    lab1 = _coco(first.labeled_json)
    second = df.prepare(str(tmp_path / "c"), tile=256, num_labeled=3, seed=1, max_unlabeled=1, max_val=1)
    assert second.root == first.root
    assert len(_coco(second.labeled_json)["images"]) == 3
    assert len(os.listdir(os.path.join(second.image_root, "labeled"))) == 3
    assert _coco(os.path.join(second.root, "READY.json"))["params"]["num_labeled"] == 3
    assert os.listdir(tmp_path) == ["c"]  # old copy and temporary folder are gone
    assert len(lab1["images"]) == 2


def test_refuses_to_replace_a_foreign_folder_and_checks_parameters(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        df.prepare(str(tmp_path / "d"), num_labeled=1, max_unlabeled=0, max_val=0)
    assert (tmp_path / "d" / "keep.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="num_labeled"):
        df.prepare(str(tmp_path / "e"), num_labeled=10_000)
    with pytest.raises(ValueError, match="min_visible"):
        df.prepare(str(tmp_path / "e"), min_visible=0)
    assert sorted(os.listdir(tmp_path)) == ["d"]


def test_cli_prints_counts(built, capsys):
    assert df.main(["--out", built.root, "--num-labeled", "4", "--max-unlabeled", "6", "--max-val", "3"]) == 0
    out = capsys.readouterr().out
    assert "labeled" in out and "unlabeled" in out and "val" in out
    assert "   4 tiles" in out and "   6 tiles" in out and "   3 tiles" in out
