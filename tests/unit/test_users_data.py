"""Users' own data: registration normalises what mmdet / mmseg / pycocotools assume, refuses
what cannot be used (naming the file and the item) and never gives a silent wrong label or
metric. Fixtures: tests/messy_data.py, generated per test."""

from __future__ import annotations

import json
import math
import os
import re

import numpy as np
import pytest
from PIL import Image

from selftrain.registration import DatasetError
from selftrain.stage import get_store
from tasks.register_dataset import normalise_coco, register_dataset
from tasks.register_seg_dataset import register_seg_dataset
from tests import messy_data
from tests.messy_data import CAT, DOG


@pytest.fixture
def det(tmp_path):
    return messy_data.detection_set(str(tmp_path / "data")), str(tmp_path / "store")


def _register(store, part, role="labeled", like=None):
    return register_dataset.fn(store, "messy", part["ann_file"], part["image_root"], role, like=like)


def test_categories_sorted_by_id_give_one_label_mapping_for_every_stage(det):
    """Item: categories listed [7 dog, 3 cat]. Label index i is the i-th category by id,
    for mmdet's training set, the pseudo boxes and the per-class thresholds alike."""
    from mmdet.datasets import CocoDataset

    from selftrain.pseudo_sets import image_rows

    data, store = det
    ref = _register(store, data["labeled"])
    meta = get_store(store).manifest(ref).meta
    assert meta["classes"] == ["cat", "dog"] and meta["category_ids"] == [CAT, DOG]
    assert any("categories sorted by id" in c for c in meta["normalised"])
    path = get_store(store).get_file(ref, "coco.json", os.path.join(os.path.dirname(store), "norm.json"))
    ds = CocoDataset(
        ann_file=path,
        data_prefix=dict(img=data["labeled"]["image_root"] + "/"),
        metainfo=dict(classes=tuple(meta["classes"])),
        test_mode=True,
        pipeline=[],
    )
    labels = {
        info["img_path"].rsplit("/", 1)[-1]: [i["bbox_label"] for i in info["instances"]]
        for info in ds.load_data_list()
    }
    assert labels["a.png"] == [1] and labels["b.jpg"] == [0]  # dog -> 1, cat -> 0
    # The teacher predicting label 1 (dog) on an unlabeled image gives a pseudo box of category 7.
    import torch
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    pred = DetDataSample(metainfo=dict(ori_shape=(50, 60)))
    pred.pred_instances = InstanceData(
        bboxes=torch.tensor([[1.0, 1.0, 9.0, 9.0], [2.0, 2.0, 8.0, 8.0]]),
        scores=torch.tensor([0.6, 0.6]),
        labels=torch.tensor([1, 0]),
    )
    rows, _ = image_rows({"image_id": "u", "image_uri": "u"}, pred, "", meta["category_ids"])
    assert [r["label"] for r in rows] == [DOG, CAT]
    from selftrain.pseudo_labels import Thresholds

    dog = Thresholds(default=0.5, per_class={"dog": 0.7})  # class_thresholds={"dog": 0.7}
    kept = [
        r["label"] for r in rows if r["score"] >= dog.of(dict(zip(meta["category_ids"], meta["classes"]))[r["label"]])
    ]
    assert kept == [CAT]  # the dog box fell under the dog's threshold, not the cat's


def test_annotation_ids_from_zero_are_renumbered_and_perfect_predictions_score_one(det):
    """Item: annotation ids 0, 1, 2 ... pycocotools treats id 0 as "no match". After
    registration, predictions equal to the ground truth score bbox mAP 1.0 with mmdet's
    CocoMetric (pycocotools)."""
    import torch
    from mmdet.evaluation import CocoMetric

    data, store = det
    ref = _register(store, data["val"], "val")
    meta = get_store(store).manifest(ref).meta
    assert any("annotation ids renumbered" in c for c in meta["normalised"])
    path = get_store(store).get_file(ref, "coco.json", os.path.join(os.path.dirname(store), "val.json"))
    coco = json.load(open(path))
    assert sorted(a["id"] for a in coco["annotations"]) == list(range(1, len(coco["annotations"]) + 1))
    assert [a["source_id"] for a in coco["annotations"]] == list(range(len(coco["annotations"])))
    metric = CocoMetric(ann_file=path, metric="bbox")
    metric.dataset_meta = {"classes": tuple(meta["classes"])}
    samples = []
    for im in coco["images"]:
        anns = [a for a in coco["annotations"] if a["image_id"] == im["id"]]
        boxes = [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in anns]
        labels = [meta["category_ids"].index(a["category_id"]) for a in anns]
        samples.append(
            {
                "img_id": im["id"],
                "ori_shape": (im["height"], im["width"]),
                "pred_instances": {
                    "bboxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                    "scores": torch.ones(len(anns)),
                    "labels": torch.tensor(labels),
                },
            }
        )
    metric.process({}, samples)
    result = metric.evaluate(size=len(samples))
    assert result["coco/bbox_mAP"] == pytest.approx(1.0)


def test_registration_sees_images_as_training_decodes_them(det, tmp_path):
    """EXIF-rotated, CMYK, grayscale, RGBA and 16-bit images, one in a symlinked folder,
    are registered with their decoded sizes; an EXIF-rotated image declared in its stored
    size is refused, naming the file and the orientation."""
    data, store = det
    ref = _register(store, data["labeled"])
    assert get_store(store).manifest(ref).meta["num_images"] == len(messy_data.LABELED)
    coco = json.load(open(data["labeled"]["ann_file"]))
    for im in coco["images"]:
        if im["file_name"] == "c_rot.jpg":
            im["width"], im["height"] = im["height"], im["width"]  # the stored (unrotated) size
    for a in coco["annotations"]:  # keep boxes inside the declared size so only the size is wrong
        a["bbox"] = [1, 1, 4, 4]
    bad = tmp_path / "rot.json"
    bad.write_text(json.dumps(coco))
    with pytest.raises(
        DatasetError,
        match=r"c_rot.jpg is stored 80x48 with EXIF orientation 6.*decodes it "
        r"rotated to 48x80",
    ):
        register_dataset.fn(store, "messy", str(bad), data["labeled"]["image_root"], "labeled")


def test_empty_sets_and_bad_items_are_refused_naming_them(det, tmp_path):
    data, store = det
    coco = json.load(open(data["val"]["ann_file"]))
    empty = dict(coco, annotations=[])
    (tmp_path / "empty.json").write_text(json.dumps(empty))
    with pytest.raises(DatasetError, match=r"empty.json: the val set has no boxes.*undefined"):
        register_dataset.fn(store, "messy", str(tmp_path / "empty.json"), data["val"]["image_root"], "val")
    crowd = dict(coco, annotations=[dict(a, iscrowd=1) for a in coco["annotations"]])
    (tmp_path / "crowd.json").write_text(json.dumps(crowd))
    with pytest.raises(DatasetError, match="crowd.json: the labeled set has no boxes.*cannot learn"):
        register_dataset.fn(store, "messy", str(tmp_path / "crowd.json"), data["val"]["image_root"], "labeled")
    nan_box = dict(coco, annotations=[dict(coco["annotations"][0], bbox=[1, math.nan, 3, 3])])
    with pytest.raises(DatasetError, match="annotation 0 .* non-finite bbox"):
        normalise_coco(json.dumps(nan_box).encode(), "n.json")
    dup = dict(coco, categories=[{"id": 7, "name": "dog"}, {"id": 3, "name": "dog"}])
    with pytest.raises(DatasetError, match="category name 'dog' is used by ids 7 and 3"):
        normalise_coco(json.dumps(dup).encode(), "d.json")


def test_files_and_folders_that_cannot_be_read_are_dataset_errors_naming_them(det, tmp_path):
    """An annotation file that is a folder or has mode 000, an image root that is missing, a
    file or unreadable, an image of mode 000: each a DatasetError naming the file and the set
    (the permission cases run without root's capability to read past them)."""
    from tests.processes import run_unprivileged

    data, store = det
    part = data["labeled"]
    with pytest.raises(DatasetError, match=r"labeled annotations .* cannot be read: IsADirectoryError"):
        register_dataset.fn(store, "messy", part["image_root"], part["image_root"], "labeled")
    with pytest.raises(DatasetError, match=r"\(labeled set\): image root .*nope: folder .*nope does not exist"):
        register_dataset.fn(store, "messy", part["ann_file"], str(tmp_path / "nope"), "labeled")
    with pytest.raises(DatasetError, match=r"\(val set\): image root .*: .* is a file, not a folder"):
        register_dataset.fn(store, "messy", part["ann_file"], part["ann_file"], "val")
    first = json.load(open(part["ann_file"]))["images"][0]["file_name"]
    code = f"""
from tasks.register_dataset import register_dataset
register_dataset.fn({store!r}, "messy", {part["ann_file"]!r}, {part["image_root"]!r}, "labeled")
"""
    for path, expected in (
        (part["ann_file"], "labeled annotations .* cannot be read: PermissionError"),
        (os.path.join(part["image_root"], first), f"image .*{first} cannot be read: PermissionError"),
        (part["image_root"], "labeled set.: image root .*Permission denied"),
    ):
        mode = os.stat(path).st_mode
        os.chmod(path, 0)
        try:
            done = run_unprivileged(code)
        finally:
            os.chmod(path, mode)
        assert re.search(f"DatasetError: .*{expected}", done.stderr), (path, done.stderr[-800:])


def test_held_out_set_must_share_the_labeled_categories(det, tmp_path):
    data, store = det
    labeled = _register(store, data["labeled"])
    coco = json.load(open(data["val"]["ann_file"]))
    coco["categories"] = [{"id": 7, "name": "cat"}, {"id": 3, "name": "dog"}]  # names swapped
    (tmp_path / "swapped.json").write_text(json.dumps(coco))
    with pytest.raises(DatasetError, match=r"swapped.json: its categories differ .*only here: \['3:dog', '7:cat'\]"):
        register_dataset.fn(
            store, "messy", str(tmp_path / "swapped.json"), data["val"]["image_root"], "val", like=labeled
        )
    assert _register(store, data["val"], "val", like=labeled)


def test_binary_masks_stored_as_0_255_need_a_label_map(tmp_path):
    seg = messy_data.segmentation_set(str(tmp_path / "data"))
    lab, store = seg["labeled"], str(tmp_path / "store")
    args = (
        store,
        "messy-seg",
        lab["img_dir"],
        lab["ann_dir"],
        lab["classes"],
        "labeled",
        lab["img_suffix"],
        lab["seg_map_suffix"],
    )
    with pytest.raises(DatasetError, match=r"pixels of \['background'\] only.*pass label_map=\{255: 1\}"):
        register_seg_dataset.fn(*args)
    ref = register_seg_dataset.fn(*args, label_map={255: 1})
    meta = get_store(store).manifest(ref).meta
    assert meta["class_pixels"]["lesion"] > 0 and meta["ignored_pixels"] == 0 and meta["label_map"] == {"255": 1}
    pairs = get_store(store).read_json(ref, "pairs.json")
    rot = next(p for p in pairs if p["image_id"] == "s3_rot")
    assert (rot["width"], rot["height"]) == (48, 80)  # the decoded (EXIF-rotated) size
    # mmseg's own loading applies the mapping: the lesion is class 1, not ignored.
    from mmseg.datasets.transforms import LoadAnnotations

    from selftrain.mm.segmentation import PairListSegDataset

    path = tmp_path / "pairs.json"
    path.write_text(json.dumps(pairs))
    item = PairListSegDataset(
        ann_file=str(path),
        data_prefix=dict(),
        metainfo=dict(classes=tuple(lab["classes"])),
        pipeline=[],
        lazy_init=False,
    ).get_data_info(0)
    loaded = LoadAnnotations()(dict(item))
    assert set(np.unique(loaded["gt_seg_map"]).tolist()) == {0, 1}


def test_label_map_in_the_stored_frame_of_a_rotated_image_is_refused(tmp_path):
    seg = messy_data.segmentation_set(str(tmp_path / "data"))
    lab = seg["labeled"]
    path = os.path.join(lab["ann_dir"], "s3_rot.png")
    Image.fromarray(np.asarray(Image.open(path)).T.copy(), "L").save(path)  # 80x48: the stored frame
    with pytest.raises(DatasetError, match=r"s3_rot.png is 80x48 but its image is 48x80.*EXIF orientation 6"):
        register_seg_dataset.fn(
            str(tmp_path / "store"),
            "m",
            lab["img_dir"],
            lab["ann_dir"],
            lab["classes"],
            "labeled",
            lab["img_suffix"],
            lab["seg_map_suffix"],
            label_map={255: 1},
        )


def test_a_class_without_pixels_is_a_recorded_warning(tmp_path):
    seg = messy_data.segmentation_set(str(tmp_path / "data"))
    lab = seg["labeled"]
    ref = register_seg_dataset.fn(
        str(tmp_path / "store"),
        "m",
        lab["img_dir"],
        lab["ann_dir"],
        ["background", "lesion", "scar"],
        "labeled",
        lab["img_suffix"],
        lab["seg_map_suffix"],
        label_map={255: 1},
    )
    warnings = get_store(str(tmp_path / "store")).manifest(ref).meta["warnings"]
    assert warnings[0] == f"{lab['ann_dir']}: class 'scar' has no pixel in the labeled set"
    assert "1 image(s) carry an EXIF orientation" in warnings[1] and "s3_rot.jpg" in warnings[1]


def test_detection_heads_are_sized_from_the_registered_classes():
    from selftrain.mm.configs import det_model, det_tta_model, load_config, seg_model, set_num_classes

    cfg = load_config("det/retinanet_mnv2_256_cpu")
    assert det_model(cfg, num_classes=3)["bbox_head"]["num_classes"] == 3
    assert det_tta_model(cfg, num_classes=2)["module"]["bbox_head"]["num_classes"] == 2
    two_stage = {
        "type": "FasterRCNN",
        "rpn_head": {"type": "RPNHead", "num_classes": 1},
        "roi_head": {"bbox_head": [{"num_classes": 80}, {"num_classes": 80}], "mask_head": {"num_classes": 80}},
    }
    set_num_classes(two_stage, 5)
    assert two_stage["rpn_head"]["num_classes"] == 1
    assert [h["num_classes"] for h in two_stage["roi_head"]["bbox_head"]] == [5, 5]
    assert two_stage["roi_head"]["mask_head"]["num_classes"] == 5
    # pretrained=False is the random-initialisation control for every config, also those that
    # name an ImageNet checkpoint at the model level (mmseg's `pretrained`).
    r101 = load_config("seg/deeplabv3plus_r101_512_voc12aug", "seg")
    assert r101.model.get("pretrained")
    model = seg_model(r101, 21, pretrained=False)
    assert "pretrained" not in model and "init_cfg" not in model["backbone"]


def test_parameters_are_checked_before_any_work(tmp_path):
    from pydantic import ValidationError

    from flows.self_training import SelfTrainingParams, check_class_thresholds

    base = dict(
        labeled=dict(ann_file="a.json", image_root="i"),
        val=dict(ann_file="v.json", image_root="i"),
        unlabeled="u",
        store=str(tmp_path / "s"),
    )
    for bad in (math.nan, 40.0, -1.0):
        with pytest.raises(ValidationError, match="class_thresholds must be scores in"):
            SelfTrainingParams(**base, class_thresholds={"dog": bad})
    with pytest.raises(ValueError, match=r"unknown classes \['dgo'\]; the labeled set's classes are \['cat', 'dog'\]"):
        check_class_thresholds({"dgo": 0.5}, ["cat", "dog"])
    with pytest.raises(ValidationError, match="not a detector"):
        SelfTrainingParams(**base, config="seg/deeplabv3plus_mnv2_128_cpu")
    with pytest.raises(ValidationError, match="model config 'det/nope' not found"):
        SelfTrainingParams(**base, config="det/nope")
    with pytest.raises(ValidationError, match="tta_scales must be positive"):
        SelfTrainingParams(**base, tta_scales=[1.0, 0.0])
    seg = dict(
        labeled=dict(img_dir="i", ann_dir="a", classes=["bg", "fg"]),
        val=dict(img_dir="i", ann_dir="a", classes=["bg", "fg"]),
        unlabeled="u",
        task="segmentation",
        method="st",
        store=str(tmp_path / "s"),
    )
    assert SelfTrainingParams(**seg, aug="S2").aug == "S2"  # Zoph et al.'s presets apply to segmentation too
    with pytest.raises(ValidationError, match="aug"):
        SelfTrainingParams(**seg, aug="S9")
    with pytest.raises(ValidationError, match="val.classes .* must equal labeled.classes"):
        SelfTrainingParams(**dict(seg, val=dict(img_dir="i", ann_dir="a", classes=["fg", "bg"])))
    # The UI and the CLI send JSON: label_map keys arrive as strings.
    p = SelfTrainingParams(**dict(seg, labeled=dict(seg["labeled"], label_map={"255": 1})))
    assert p.labeled.label_map == {255: 1}


def _seg_args(store, part):
    """register_seg_dataset's positional arguments for a generated labeled set."""
    return (
        store,
        "m",
        part["img_dir"],
        part["ann_dir"],
        part["classes"],
        "labeled",
        part["img_suffix"],
        part["seg_map_suffix"],
    )


def test_label_maps_the_way_users_export_them(tmp_path):
    """16-bit values above 255 (mmseg reads 8 bits: they would wrap), an empty label map,
    masks of two export tools mixed (0/1 and 0/255), an EXIF orientation 3 photo."""
    seg = messy_data.segmentation_set(str(tmp_path / "data"))
    lab, store = seg["labeled"], str(tmp_path / "store")
    path = os.path.join(lab["ann_dir"], "s1.png")
    mask = np.asarray(Image.open(path))
    Image.fromarray((mask > 0).astype(np.uint16) * 65535).save(path)
    with pytest.raises(
        DatasetError,
        match=r"s1.png holds values \[65535\] outside 0..255: mmseg reads label maps "
        "as 8-bit",
    ):
        register_seg_dataset.fn(*_seg_args(store, lab), label_map={65535: 1})
    open(path, "wb").close()
    with pytest.raises(DatasetError, match=r"label map .*s1.png cannot be read"):
        register_seg_dataset.fn(*_seg_args(store, lab), label_map={255: 1})
    Image.fromarray((mask > 0).astype(np.uint8)).save(path)  # this tool wrote 0/1, the others 0/255
    ref = register_seg_dataset.fn(*_seg_args(store, lab))
    warnings = get_store(store).manifest(ref).meta["warnings"]
    assert any("3 label map(s) hold only background (0) and the ignore label (255)" in w for w in warnings)


def test_a_held_out_set_takes_the_labeled_label_map_and_one_class_sets_are_refused(tmp_path):
    from flows.self_training import SelfTrainingParams

    seg = messy_data.segmentation_set(str(tmp_path / "data"))
    lab, val = dict(seg["labeled"], label_map={255: 1}), seg["val"]
    p = SelfTrainingParams(
        task="segmentation",
        method="st",
        labeled=lab,
        val=val,
        unlabeled=seg["unlabeled"],
        store=str(tmp_path / "store"),
    )
    assert p.val.label_map == {255: 1}  # stored like the labeled set: mapped alike
    with pytest.raises(DatasetError, match=r"the val set has pixels of \['background'\] only.*be scored on 1"):
        register_seg_dataset.fn(
            str(tmp_path / "store"),
            "m",
            val["img_dir"],
            val["ann_dir"],
            val["classes"],
            "val",
            val["img_suffix"],
            val["seg_map_suffix"],
        )


def test_coco_files_the_way_tools_write_them(det, tmp_path):
    data, store = det
    coco = json.load(open(data["labeled"]["ann_file"]))
    coco["images"][0]["file_name"] = "././" + coco["images"][0]["file_name"]
    coco["categories"] = [dict(c, id=float(c["id"])) for c in coco["categories"]]  # a pandas export
    coco, changes = normalise_coco(json.dumps(coco).encode(), "t.json")
    assert coco["images"][0]["file_name"] == messy_data.LABELED[-1][0]  # images were listed reversed
    assert [c["id"] for c in coco["categories"]] == [CAT, DOG]
    raw = json.load(open(data["labeled"]["ann_file"]))
    raw["annotations"][0]["bbox"] = [96.2, 5, 0.7, 10]  # a.png is 96 wide: outside, though within 1 px
    with pytest.raises(DatasetError, match=r"box \[96.2, 5, 0.7, 10\] lies outside image a.png"):
        normalise_coco(json.dumps(raw).encode(), "t.json")


def test_thin_and_oriented_images_in_a_coco_set(det, tmp_path):
    data, store = det
    root = data["labeled"]["image_root"]
    coco = json.load(open(data["labeled"]["ann_file"]))
    Image.fromarray(np.full((1, 600, 3), 9, np.uint8)).save(os.path.join(root, "line.png"))
    coco["images"].append({"id": 1, "file_name": "line.png", "width": 600, "height": 1})
    (tmp_path / "thin.json").write_text(json.dumps(coco))
    with pytest.raises(DatasetError, match=r"line.png is 600x1: too thin"):
        register_dataset.fn(store, "messy", str(tmp_path / "thin.json"), root, "labeled")
    coco["images"].pop()
    img = messy_data._canvas(40, 30, seed=3)
    exif = Image.Exif()
    exif[messy_data.EXIF_ORIENTATION] = 3  # upside down: same size, so only a note can tell
    Image.fromarray(img[::-1, ::-1].copy()).save(os.path.join(root, "flip.jpg"), exif=exif.tobytes())
    coco["images"].append({"id": 2, "file_name": "flip.jpg", "width": 40, "height": 30})
    (tmp_path / "flip.json").write_text(json.dumps(coco))
    ref = register_dataset.fn(store, "messy", str(tmp_path / "flip.json"), root, "labeled")
    notes = get_store(store).manifest(ref).meta["normalised"]
    assert any("carry an EXIF orientation" in n and "flip.jpg (3)" in n and "c_rot.jpg (6)" in n for n in notes)


def test_more_parameters_checked_at_the_start(tmp_path):
    from pydantic import ValidationError

    from flows.self_training import SelfTrainingParams

    base = dict(
        labeled=dict(ann_file="a.json", image_root="i"),
        val=dict(ann_file="v.json", image_root="i"),
        unlabeled="u",
        store=str(tmp_path / "s"),
    )
    for field, value, match in (
        ("seed", -1, "greater than or equal to 0"),
        ("seed", 2**40, "less than or equal"),
        ("alpha", math.inf, "finite number"),
        ("dataset", "../x", "invalid dataset name"),
        ("method", [], "at least one student method"),
    ):
        with pytest.raises(ValidationError, match=match):
            SelfTrainingParams(**base, **{field: value})
