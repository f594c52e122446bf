"""Reviewed pseudo masks back as labeled data: a folder of corrected PNG label maps merged with
a registered labeled segmentation set (hand-checked paths, split lines and pixel values), the
merged set registered through its split file, every mismatch refused naming the file and
nothing written. Real files, a real store, the real registration stage."""

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from selftrain.corrections import CorrectionError
from selftrain.kinds import KINDS
from selftrain.stage import get_store
from storage.schemas import UNLABELED_IMAGES, to_parquet_bytes
from tasks.register_seg_dataset import register_seg_dataset

CLASSES = ["background", "leaf", "fruit"]
SEG = KINDS["segmentation"]


@pytest.fixture
def run(tmp_path):
    """A labeled set of two 6x4 images whose maps store the fruit as 200 (label_map {200: 2}),
    and four unlabeled images (one 5x5, one a JPEG) listed in a real store."""
    root = tmp_path / "data"
    for folder in ("labeled/img", "labeled/ann", "pool/sub"):
        (root / folder).mkdir(parents=True)
    for name in ("l0", "l1"):
        Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(root / "labeled/img" / f"{name}.png")
        label = np.array([[0, 1, 1, 200, 200, 255]] * 4, np.uint8)
        Image.fromarray(label).save(root / "labeled/ann" / f"{name}.png")
    for rel, size in (("a.png", (6, 4)), ("b.png", (6, 4)), ("sub/c.png", (5, 5)), ("d.jpg", (6, 4))):
        Image.fromarray(np.zeros((size[1], size[0], 3), np.uint8)).save(root / "pool" / rel)
    store_url = str(tmp_path / "store")
    labeled = register_seg_dataset.fn(
        store_url,
        "d",
        str(root / "labeled/img"),
        str(root / "labeled/ann"),
        CLASSES,
        "labeled",
        ".png",
        ".png",
        label_map={200: 2},
    )
    store = get_store(store_url)
    rows = [
        {"image_id": rel, "image_uri": str(root / "pool" / rel), "size": 1}
        for rel in ("a.png", "b.png", "sub/c.png", "d.jpg")
    ]
    unlabeled = store.ref("d", "unlabeled", "2" * 32)
    store.write(unlabeled, {"images.parquet": to_parquet_bytes(pa.Table.from_pylist(rows), UNLABELED_IMAGES)})
    return store, store_url, labeled, unlabeled, root, tmp_path


def _review(folder, name, label):
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(label, np.uint8)).save(path)


def test_reviewed_masks_join_the_labeled_set_through_a_split_file(run):
    store, store_url, labeled, unlabeled, root, tmp = run
    reviewed = tmp / "reviewed"
    a = np.array([[2, 2, 0, 0, 1, 255]] * 4)
    c = np.zeros((5, 5))
    c[2, 2] = 1
    _review(reviewed, "a.png", a)
    _review(reviewed, "sub/c.png", c)
    exported = {"a.png": a.astype(np.uint8), "sub/c.png": np.zeros((5, 5), np.uint8)}  # c was changed
    done = SEG.import_corrections(store, labeled, unlabeled, str(reviewed), "png", str(tmp / "merged"), pseudo=None)
    assert (done["labeled_images"], done["added_images"], done["images"]) == (2, 2, 4)
    nxt = done["next_labeled"]
    assert nxt == {
        "img_dir": str(root),
        "ann_dir": str(tmp / "merged" / "ann"),
        "split": str(tmp / "merged" / "split.txt"),
        "classes": CLASSES,
        "img_suffix": ".png",
        "seg_map_suffix": ".png",
    }
    assert sorted(p.name for p in tmp.iterdir() if p.name.startswith(".merged")) == []  # renamed into place
    lines = (tmp / "merged" / "split.txt").read_text().splitlines()
    assert lines == ["labeled/img/l0", "labeled/img/l1", "pool/a", "pool/sub/c"]
    # the labeled maps as class indices (200 -> 2 by the set's label_map, 255 stays ignored)
    l0 = np.array(Image.open(tmp / "merged/ann/labeled/img/l0.png"))
    assert l0[0].tolist() == [0, 1, 1, 2, 2, 255]
    assert np.array_equal(np.array(Image.open(tmp / "merged/ann/pool/a.png")), a)
    assert "label_map {'200': 2} is applied" in done["notes"][0]
    # the merged set registers through its split file: the images stay where they were
    merged = register_seg_dataset.fn(
        store_url, "d", **{k: v for k, v in nxt.items() if k != "classes"}, classes=CLASSES, role="labeled"
    )
    pairs = store.read_json(merged, "pairs.json")
    assert [p["img_path"] for p in pairs] == [
        str(root / "labeled/img/l0.png"),
        str(root / "labeled/img/l1.png"),
        str(root / "pool/a.png"),
        str(root / "pool/sub/c.png"),
    ]
    # pixels: the labeled maps 2 x (4, 8, 8), a.png (8, 4, 8), sub/c.png (24, 1, 0)
    class_pixels = store.manifest(merged).meta["class_pixels"]
    assert class_pixels == {"background": 8 + 8 + 24, "leaf": 16 + 4 + 1, "fruit": 16 + 8}
    # the next run's listing leaves the reviewed images out, by their URI
    assert {str(root / "pool/a.png"), str(root / "pool/sub/c.png")} <= SEG.image_uris(store, merged)

    class Exported:  # the PseudoMaskSet as `selftrain import-labels` opens it
        masks = exported

        def close(self):
            pass

    again = SEG.import_corrections(
        store, labeled, unlabeled, str(reviewed), "png", str(tmp / "merged2"), pseudo=lambda: Exported()
    )
    assert again["unchanged"] == 1  # a.png equals its export; sub/c.png was corrected


@pytest.mark.parametrize(
    "name, label, message",
    [
        ("e.png", np.zeros((4, 6)), r"e.png: names no unlabeled image of the run"),
        ("a.png", np.zeros((5, 5)), r"a.png \(image 'a.png'\): label map .*a.png is 5x5 but its image is 6x4"),
        ("b.png", np.full((4, 6), 3), r"b.png \(image 'b.png'\): label map .*b.png has values \[3\] outside the 3"),
        ("d.png", np.zeros((4, 6)), r"d.png: image 'd.jpg' does not end with the labeled set's image suffix '.png'"),
    ],
)
def test_a_reviewed_map_that_does_not_fit_is_refused_naming_it(run, name, label, message):
    store, _, labeled, unlabeled, _, tmp = run
    reviewed = tmp / "reviewed"
    _review(reviewed, "sub/c.png", np.zeros((5, 5)))  # a good one beside it
    _review(reviewed, name, label)
    with pytest.raises(CorrectionError, match=message):
        SEG.import_corrections(store, labeled, unlabeled, str(reviewed), "png", str(tmp / "merged"))
    assert not (tmp / "merged").exists()  # nothing written


def test_files_that_are_no_reviewed_map_are_left_out_and_said(run):
    """A macOS resource fork, a hidden folder and a JPEG beside the maps are left out with a
    note; a map of an image labeled in an earlier round is refused saying so."""
    store, _, labeled, unlabeled, root, tmp = run
    reviewed = tmp / "reviewed"
    _review(reviewed, "a.png", np.zeros((4, 6)))
    (reviewed / "._a.png").write_bytes(b"resource fork")
    _review(reviewed, ".trash/b.png", np.zeros((4, 6)))
    Image.fromarray(np.zeros((4, 6), np.uint8)).save(reviewed / "b.jpg")
    done = SEG.import_corrections(store, labeled, unlabeled, str(reviewed), "png", str(tmp / "m"))
    assert done["added_images"] == 1
    assert done["notes"][0].startswith("2 hidden file(s) or folder(s) left out")
    assert done["notes"][1].startswith("1 file(s) that are not .png label maps left out, e.g. ")
    with pytest.raises(CorrectionError, match="lies inside the reviewed folder"):
        SEG.import_corrections(store, labeled, unlabeled, str(reviewed), "png", str(reviewed / "merged"))
    _review(reviewed, "l0.png", np.zeros((4, 6)))  # labeled/img/l0.png: in the labeled set
    with pytest.raises(CorrectionError, match=r"l0.png: its image is in the labeled set already \(reviewed in an"):
        SEG.import_corrections(store, labeled, unlabeled, str(reviewed), "png", str(tmp / "m2"))


def test_formats_folders_and_labeled_images_are_checked(run):
    store, _, labeled, unlabeled, root, tmp = run
    reviewed = tmp / "reviewed"
    _review(reviewed, "a.png", np.zeros((4, 6)))
    with pytest.raises(CorrectionError, match=r"reviewed masks of a segmentation set are imported as \['png'\]"):
        SEG.import_corrections(store, labeled, unlabeled, str(reviewed), "coco", str(tmp / "m"))
    (tmp / "full").mkdir()
    (tmp / "full" / "x").write_text("")
    with pytest.raises(CorrectionError, match=r"goes into a new or empty folder \(it holds files\)"):
        SEG.import_corrections(store, labeled, unlabeled, str(reviewed), "png", str(tmp / "full"))
    with pytest.raises(CorrectionError, match="are read from a folder"):
        SEG.import_corrections(store, labeled, unlabeled, str(reviewed / "a.png"), "png", str(tmp / "m"))
    with pytest.raises(CorrectionError, match=r"no reviewed label map \(.png\)"):
        SEG.import_corrections(store, labeled, unlabeled, str(tmp / "full"), "png", str(tmp / "m"))
    with pytest.raises(CorrectionError, match=r"reviewed boxes of a detection set are imported as"):
        KINDS["detection"].import_corrections(store, labeled, unlabeled, str(reviewed), "png", str(tmp / "m"))


def test_the_image_suffix_is_what_follows_the_stem():
    """Derived from the pair alone: a stem that looks like a suffix, Cityscapes' long suffix on
    S3, and a path whose end is not its stem (refused, naming it)."""
    from selftrain.mask_corrections import _suffix

    assert _suffix({"img_path": "/d/img/png.png", "image_id": "png"}) == ".png"
    pair = {"img_path": "s3://b/city/aachen/a_000019_leftImg8bit.png", "image_id": "aachen/a_000019"}
    assert _suffix(pair) == "_leftImg8bit.png"
    with pytest.raises(CorrectionError, match=r"/d/x.png does not end with its name 'y'"):
        _suffix({"img_path": "/d/x.png", "image_id": "y"})
