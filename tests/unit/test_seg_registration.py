"""Registering a segmentation set: every problem names its file (docs/design.md §5.2)."""

import re

import numpy as np
import pytest
from PIL import Image

from selftrain.registration import DatasetError
from tasks.register_seg_dataset import check_label_map, register_seg_dataset


def _png(arr, mode="L"):
    import io

    buf = io.BytesIO()
    Image.fromarray(np.asarray(arr, dtype=np.uint8), mode=mode).save(buf, format="PNG")
    return buf.getvalue()


def test_label_map_values_and_size_are_checked():
    ok = np.array([[0, 1], [2, 255]])
    assert check_label_map(_png(ok), "a.png", 3, (2, 2)) == {0: 1, 1: 1, 2: 1, 255: 1}
    with pytest.raises(DatasetError, match=r"a.png has values \[3\] outside the 3 classes"):
        check_label_map(_png([[0, 3]]), "a.png", 3, None)
    with pytest.raises(DatasetError, match="a.png is 2x1 but its image is 4x4"):
        check_label_map(_png([[0, 1]]), "a.png", 3, (4, 4))
    with pytest.raises(DatasetError, match="a.png has mode RGB"):
        check_label_map(_png(np.zeros((2, 2, 3)), "RGB"), "a.png", 3, None)
    with pytest.raises(DatasetError, match="a.png cannot be read"):
        check_label_map(b"not a png", "a.png", 3, None)


def _set(tmp_path, n=2):
    (tmp_path / "img").mkdir()
    (tmp_path / "ann").mkdir()
    for i in range(n):
        Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(tmp_path / "img" / f"{i}.jpg")
        label = np.ones((4, 6), np.uint8)
        label[0, 0] = 0  # one background pixel: a labeled set needs pixels of two classes
        Image.fromarray(label).save(tmp_path / "ann" / f"{i}.png")
    return str(tmp_path / "img"), str(tmp_path / "ann")


def test_register_stores_pairs_and_is_content_addressed(tmp_path):
    from selftrain.stage import get_store

    img, ann = _set(tmp_path)
    store = str(tmp_path / "store")
    ref = register_seg_dataset.fn(store, "d", img, ann, ["bg", "fg"], "labeled")
    meta = get_store(store).manifest(ref).meta
    assert meta["num_images"] == 2 and meta["class_pixels"] == {"bg": 2, "fg": 46}
    pairs = get_store(store).read_json(ref, "pairs.json")
    assert [p["image_id"] for p in pairs] == ["0", "1"] and pairs[0]["width"] == 6
    assert register_seg_dataset.fn(store, "d", img, ann, ["bg", "fg"], "labeled") == ref
    val = register_seg_dataset.fn(store, "d", img, ann, ["bg", "fg"], "val")  # refused and warned about otherwise
    assert val != ref and get_store(store).manifest(val).meta["role"] == "val"
    Image.fromarray(np.zeros((4, 6), np.uint8)).save(tmp_path / "ann" / "1.png")  # content changed
    assert register_seg_dataset.fn(store, "d", img, ann, ["bg", "fg"], "labeled") != ref


@pytest.mark.parametrize("racy_s", [None, 0.0], ids=["maps-just-written", "map-digests-stored"])
def test_a_label_map_corrected_in_place_at_the_same_byte_size_is_registered_again(tmp_path, monkeypatch, racy_s):
    """A map's bytes, not its size, enter the key: an uncompressed PNG (or a remapped value)
    keeps its byte size when corrected, and a key of sizes reused the stale registration -
    and every stage trained on it - without a word. Also when the maps' digests are stored
    by their versions (maps older than RACY_S seconds): a rewrite is another version."""
    import storage.listing
    from selftrain.stage import get_store

    if racy_s is not None:
        monkeypatch.setattr(storage.listing, "RACY_S", racy_s)

    img, ann = _set(tmp_path)
    label = np.ones((4, 6), np.uint8)
    label[0, 0] = 0
    path = tmp_path / "ann" / "1.png"
    Image.fromarray(label).save(path, compress_level=0)
    store = str(tmp_path / "store")
    ref = register_seg_dataset.fn(store, "d", img, ann, ["bg", "fg"], "labeled")
    assert get_store(store).manifest(ref).meta["class_pixels"] == {"bg": 2, "fg": 46}
    size = path.stat().st_size
    label[1, :] = 0  # a row corrected to background
    Image.fromarray(label).save(path, compress_level=0)
    assert path.stat().st_size == size
    again = register_seg_dataset.fn(store, "d", img, ann, ["bg", "fg"], "labeled")
    assert again != ref
    assert get_store(store).manifest(again).meta["class_pixels"] == {"bg": 8, "fg": 40}


def test_a_suffix_in_two_cases_is_refused_and_a_renamed_file_is_a_new_set(tmp_path):
    """The stored pairs name files: a.png renamed a.PNG (matched in any case) registers a new
    set whose pairs name the file that exists; a.png beside a.PNG is refused naming both; a
    label map without an image is a warning."""
    import os

    from selftrain.stage import get_store

    img, ann = _set(tmp_path)
    store = str(tmp_path / "store")
    ref = register_seg_dataset.fn(store, "d", img, ann, ["bg", "fg"], "labeled")
    os.rename(tmp_path / "ann" / "1.png", tmp_path / "ann" / "1.PNG")
    again = register_seg_dataset.fn(store, "d", img, ann, ["bg", "fg"], "labeled")
    assert again != ref
    pairs = get_store(store).read_json(again, "pairs.json")
    assert pairs[1]["seg_map_path"].endswith("1.PNG") and all(os.path.exists(p["seg_map_path"]) for p in pairs)
    (tmp_path / "ann" / "orphan.png").write_bytes((tmp_path / "ann" / "0.png").read_bytes())
    import logging

    records: list[str] = []  # a map alone does not change the set, and is said on the set's reuse too
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("selftrain").addHandler(handler)
    try:
        assert register_seg_dataset.fn(store, "d", img, ann, ["bg", "fg"], "labeled") == again
    finally:
        logging.getLogger("selftrain").removeHandler(handler)
    assert any("1 label map(s) have no image" in m and "orphan" in m for m in records), records
    store = str(tmp_path / "store2")  # and kept in the manifest when the set is registered
    warned = register_seg_dataset.fn(store, "d", img, ann, ["bg", "fg"], "labeled")
    assert warned.key == again.key and any(
        "1 label map(s) have no image" in w and "orphan" in w
        for w in get_store(store).manifest(warned).meta["warnings"]
    )
    (tmp_path / "ann" / "1.png").write_bytes((tmp_path / "ann" / "1.PNG").read_bytes())
    with pytest.raises(DatasetError, match=r"labeled: ann_dir: .*/1.PNG and .*/1.png are one name in two spellings"):
        register_seg_dataset.fn(store, "d", img, ann, ["bg", "fg"], "labeled")


def test_sub_folders_that_cannot_be_read_are_named_not_left_out_unsaid(tmp_path):
    """An image sub-folder of mode 000 (a volume's lost+found): the set registers without it
    and a warning names it; a map sub-folder that can be listed but not entered (mode 0444):
    its images have no label map, and the error says why. Run without root's capability to
    read past permissions."""
    import os
    import shutil

    from tests.processes import run_unprivileged

    img, ann = _set(tmp_path)
    for side, suffix in (("img", "jpg"), ("ann", "png")):
        (tmp_path / side / "sub").mkdir()
        shutil.copy(tmp_path / side / f"0.{suffix}", tmp_path / side / "sub" / f"2.{suffix}")
    code = f"""
from selftrain.stage import get_store
from tasks.register_seg_dataset import register_seg_dataset
ref = register_seg_dataset.fn({str(tmp_path / "store")!r}, "d", {img!r}, {ann!r}, ["bg", "fg"], "labeled")
meta = get_store({str(tmp_path / "store")!r}).manifest(ref).meta
print(meta["num_images"], meta["warnings"])
"""
    os.chmod(tmp_path / "img" / "sub", 0)
    try:
        done = run_unprivileged(code)
    finally:
        os.chmod(tmp_path / "img" / "sub", 0o755)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("2 ") and "1 sub-folder(s) or file(s) under" in done.stdout
    assert "/img/sub (Permission denied)" in done.stdout
    os.chmod(tmp_path / "ann" / "sub", 0o444)  # listed, not entered: its file cannot be reached
    try:
        done = run_unprivileged(code)
    finally:
        os.chmod(tmp_path / "ann" / "sub", 0o755)
    assert "DatasetError: labeled: 1 image(s) have no label map" in done.stderr
    assert "/ann/sub/2.png (Permission denied)" in done.stderr
    (tmp_path / "train.txt").write_text("0\nsub/2\n")  # a split's look-up: the same, named
    split = code.replace('"labeled")', f'"labeled", split={str(tmp_path / "train.txt")!r})')
    os.chmod(tmp_path / "img" / "sub", 0)
    try:
        done = run_unprivileged(split)
    finally:
        os.chmod(tmp_path / "img" / "sub", 0o755)
    assert "DatasetError: labeled: split file" in done.stderr and "['sub/2'] (1 sub-folder(s)" in done.stderr
    assert "/img/sub/2.jpg (Permission denied)" in done.stderr
    os.chmod(tmp_path / "img" / "1.jpg", 0)  # an image file itself
    try:
        done = run_unprivileged(code)
    finally:
        os.chmod(tmp_path / "img" / "1.jpg", 0o644)
    assert re.search(r"DatasetError: labeled: image .*/img/1.jpg cannot be read: PermissionError", done.stderr)


def test_names_in_two_unicode_forms_are_explained_and_one_folder_may_hold_both(tmp_path):
    """An image named in NFC with its map in NFD (a copy from macOS) is refused with the reason;
    images and maps in one folder: the maps are not 'other images'."""
    import unicodedata

    from selftrain.stage import get_store

    img, ann = _set(tmp_path)
    nfc, nfd = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
    assert nfc != nfd
    (tmp_path / "img" / f"{nfc}.jpg").write_bytes((tmp_path / "img" / "0.jpg").read_bytes())
    (tmp_path / "ann" / f"{nfd}.png").write_bytes((tmp_path / "ann" / "0.png").read_bytes())
    with pytest.raises(DatasetError, match="same text in another Unicode normalisation .*NFC against NFD"):
        register_seg_dataset.fn(str(tmp_path / "store"), "d", img, ann, ["bg", "fg"], "labeled")
    both = tmp_path / "both"
    both.mkdir()
    for name in ("0.jpg", "1.jpg"):
        (both / name).write_bytes((tmp_path / "img" / name).read_bytes())
    for name in ("0.png", "1.png"):
        (both / name).write_bytes((tmp_path / "ann" / name).read_bytes())
    ref = register_seg_dataset.fn(str(tmp_path / "store"), "d", str(both), str(both), ["bg", "fg"], "labeled")
    assert get_store(str(tmp_path / "store")).manifest(ref).meta["warnings"] == []


def test_a_label_map_that_is_no_image_is_named_with_what_it_holds(tmp_path):
    with pytest.raises(DatasetError, match=r"label map a.png cannot be read: it is empty$"):
        check_label_map(b"", "a.png", 3, None)
    with pytest.raises(
        DatasetError, match=r"a.png cannot be read: it is not an image format PIL reads \(it starts with b'<html>"
    ):
        check_label_map(b"<html>not found</html>", "a.png", 3, None)


def test_register_refuses_missing_maps_and_bad_classes(tmp_path):
    img, ann = _set(tmp_path)
    (tmp_path / "ann" / "1.png").unlink()
    store = str(tmp_path / "store")
    with pytest.raises(DatasetError, match=r"1 image\(s\) have no label map .* \['1'\]"):
        register_seg_dataset.fn(store, "d", img, ann, ["bg", "fg"], "labeled")
    with pytest.raises(DatasetError, match="at least two distinct names"):
        register_seg_dataset.fn(store, "d", img, ann, ["bg"], "labeled")
    with pytest.raises(DatasetError, match="does not exist"):
        register_seg_dataset.fn(store, "d", str(tmp_path / "nope"), ann, ["bg", "fg"], "labeled")


def test_a_split_file_names_the_set_as_mmseg_ann_file_does(tmp_path):
    """VOC's layout: every image in one folder, the segmented ones listed in a split file; the
    set is the listed images only (blank lines, spaces and a Windows line end ignored; the
    pairs sorted by name as without a split), and the others are not warned about."""
    from selftrain.stage import get_store

    img, ann = _set(tmp_path, n=3)
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(tmp_path / "img" / "nomap.jpg")  # an image left out
    (tmp_path / "train.txt").write_text("2\r\n\n  0 \n")
    store = str(tmp_path / "store")
    ref = register_seg_dataset.fn(store, "d", img, ann, ["bg", "fg"], "labeled", split=str(tmp_path / "train.txt"))
    pairs = get_store(store).read_json(ref, "pairs.json")
    assert [(p["image_id"], p["img_path"]) for p in pairs] == [("0", f"{img}/0.jpg"), ("2", f"{img}/2.jpg")]
    meta = get_store(store).manifest(ref).meta
    assert meta["num_images"] == 2 and meta["warnings"] == []
    # the same images through other spellings, a byte-order mark and an upper-case suffix: one set
    (tmp_path / "img" / "2.jpg").rename(tmp_path / "img" / "2.JPG")
    (tmp_path / "other.txt").write_bytes("\ufeff./2\n/sub/../0\n".encode())
    again = register_seg_dataset.fn(store, "d", img, ann, ["bg", "fg"], "labeled", split=str(tmp_path / "other.txt"))
    assert [p["img_path"] for p in get_store(store).read_json(again, "pairs.json")] == [f"{img}/0.jpg", f"{img}/2.JPG"]
    # a name with a space, and the folders as file:// URLs: the URIs are the local paths a listing gives
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(tmp_path / "img" / "my photo.jpg")
    Image.fromarray(np.array([[0, 1, 1, 1, 1, 1]] * 4, np.uint8)).save(tmp_path / "ann" / "my photo.png")
    (tmp_path / "spaced.txt").write_text("my photo\n0\n")
    url = register_seg_dataset.fn(
        store, "d", f"file://{img}", f"file://{ann}", ["bg", "fg"], "labeled", split=str(tmp_path / "spaced.txt")
    )
    pairs = get_store(store).read_json(url, "pairs.json")
    assert [(p["image_id"], p["img_path"]) for p in pairs] == [
        ("0", f"{img}/0.jpg"),
        ("my photo", f"{img}/my photo.jpg"),
    ]
    # without the split, the image without a map is refused, naming it
    with pytest.raises(DatasetError, match=r"1 image\(s\) have no label map .*\['nomap'\]"):
        register_seg_dataset.fn(store, "d", img, ann, ["bg", "fg"], "labeled")


def test_a_split_file_is_refused_naming_its_line_or_its_missing_images(tmp_path):
    img, ann = _set(tmp_path, n=2)
    store = str(tmp_path / "store")
    split = tmp_path / "train.txt"

    def register():
        return register_seg_dataset.fn(store, "d", img, ann, ["bg", "fg"], "labeled", split=str(split))

    split.write_text("0\n1\n./0\n")
    with pytest.raises(
        DatasetError, match=r"labeled: split file .*train.txt: line 3 lists '0' again \(first on line 1\)"
    ):
        register()
    split.write_text("0\n../img/1\n")
    with pytest.raises(DatasetError, match=r"train.txt: line 2 \('../img/1'\) names no image under img_dir"):
        register()
    split.write_text("0 1\n")  # a VOC ImageSets/Main class list: spaces belong to names, as in mmseg
    with pytest.raises(DatasetError, match=r"no file .*\['0 1'\] \(lines like '000032 1' are VOC's ImageSets/Main"):
        register()
    with pytest.raises(DatasetError, match=r"split file .*img cannot be read as a file: IsADirectoryError"):
        register_seg_dataset.fn(store, "d", img, ann, ["bg", "fg"], "labeled", split=img)
    split.write_text("0\n")
    with pytest.raises(DatasetError, match=r"labeled: img_dir .*/imgs does not exist \(or is not a folder\)"):
        register_seg_dataset.fn(store, "d", img + "s", ann, ["bg", "fg"], "labeled", split=str(split))
    split.write_text("0\n1.jpg\nsub/7\n")
    with pytest.raises(DatasetError, match=r"2 listed image\(s\) have no file .*\['1.jpg', 'sub/7'\] \(list each"):
        register()
    split.write_text("\n \n")
    with pytest.raises(DatasetError, match="train.txt lists no image"):
        register()
    split.unlink()
    with pytest.raises(DatasetError, match="train.txt does not exist"):
        register()
    split.write_text("0\n1\n")
    (tmp_path / "ann" / "1.png").unlink()
    with pytest.raises(DatasetError, match=r"1 image\(s\) have no label map .*\['1'\]"):
        register()


def test_an_unchanged_set_is_registered_again_without_reading_a_label_map(tmp_path, monkeypatch):
    """The maps' digests are stored by the listing's versions (times and inode): registering an
    unchanged set again reads no file - on S3 each map is a GET a run - and any change to a map
    (rewritten, even at the same bytes; added) reads them again."""
    import storage.listing
    import tasks.register_seg_dataset as task
    from selftrain.stage import get_store
    from storage.listing import VERSIONED_LOCAL_FS, mount_types

    if mount_types().get(tmp_path.stat().st_dev) not in VERSIONED_LOCAL_FS:
        pytest.skip(f"{tmp_path} is on a file system whose times give no version")
    monkeypatch.setattr(storage.listing, "RACY_S", 0.0)  # the files were just written
    reads = []
    real = task.read_url
    monkeypatch.setattr(task, "read_url", lambda uri: reads.append(uri) or real(uri))
    img, ann = _set(tmp_path, n=3)
    store = str(tmp_path / "store")
    ref = register_seg_dataset.fn(store, "d", img, ann, ["bg", "fg"], "labeled")
    assert len(reads) == 3 + 3 + 3  # the maps for their digests, then each image and map checked
    (digests,) = get_store(store).list("d", task.DIGESTS_STAGE)
    assert len(get_store(store).read_json(digests, "digests.json")) == 3
    reads.clear()
    assert register_seg_dataset.fn(store, "d", img, ann, ["bg", "fg"], "labeled") == ref
    assert reads == []
    Image.open(tmp_path / "ann" / "2.png").save(tmp_path / "ann" / "2.png")  # the same pixels, written again
    assert register_seg_dataset.fn(store, "d", img, ann, ["bg", "fg"], "labeled") == ref  # the same content
    assert sorted(reads) == sorted(f"{ann}/{i}.png" for i in range(3))  # a new version: every map read again
    assert len(get_store(store).list("d", task.DIGESTS_STAGE)) == 2


def test_a_file_changed_within_racy_seconds_has_no_version_and_its_set_stores_no_digests(tmp_path):
    """A local file's version is its times and inode - unless it changed within RACY_S seconds,
    when a second write could land within the same timestamp (git's 'racy' entries), or its
    file system is not one whose status-change time names its bytes; then it has none, and its
    set's maps are read on every registration."""
    import os

    import tasks.register_seg_dataset as task
    from selftrain.stage import get_store
    from storage.listing import RACY_S, list_files, local_version

    img, ann = _set(tmp_path)
    st = os.stat(f"{ann}/0.png")
    changed = max(st.st_mtime_ns, st.st_ctime_ns)
    ext4 = {st.st_dev: "ext4"}  # the mount table: file-system type by device number
    assert local_version(st, now_ns=changed + int(RACY_S * 1e9) - 1, types=ext4) == ""
    old = local_version(st, now_ns=changed + int(RACY_S * 1e9), types=ext4)
    assert old == f"local:{st.st_dev}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}"
    for fs in ("nfs4", "fuse.sshfs", "squashfs", "vfat", "cifs", "overlay", ""):  # times cached, from elsewhere, set
        assert local_version(st, now_ns=changed + int(60e9), types={st.st_dev: fs}) == ""
    assert local_version(st, now_ns=changed + int(60e9), types={}) == ""  # a device the mount table lacks
    assert {f.version for f in list_files(ann)} == {""}  # just written
    store = str(tmp_path / "store")
    register_seg_dataset.fn(store, "d", img, ann, ["bg", "fg"], "labeled")
    assert get_store(store).list("d", task.DIGESTS_STAGE) == []


def test_an_objects_version_is_a_digest_of_its_bytes_or_nothing():
    """Object stores: only an ETag that is an MD5 of the bytes (one-part uploads) or GCS's
    md5Hash is a version - a content digest, so a restored or re-uploaded object is named by
    what it holds; a multipart ETag, an HTTP server's ETag of times and size, or a time is not."""
    import base64
    import hashlib

    from storage.listing import mount_types, object_version, version_holds

    md5 = hashlib.md5(b"map").hexdigest()
    assert object_version({"ETag": f'"{md5.upper()}"', "LastModified": "2026-12-01"}) == f"md5:{md5}"
    assert object_version({"md5Hash": base64.b64encode(bytes.fromhex(md5)).decode()}) == f"md5:{md5}"
    for info in ({"ETag": f'"{md5}-2"'}, {"ETag": '"5e8f1a2b-1f4"'}, {"generation": 17}, {"mtime": 1.0}, {}):
        assert object_version(info) == "", info
    assert version_holds("s3://b/m.png", f"md5:{md5}", b"map")
    assert not version_holds("s3://b/m.png", f"md5:{md5}", b"mop")  # changed since it was listed
    assert not version_holds("s3://b/m.png", "", b"map")
    import os

    if os.path.exists("/proc/self/mountinfo"):  # Linux: the mount table names the type of every device
        assert mount_types().get(os.stat("/proc").st_dev) == "proc"


def test_a_map_changed_between_its_listing_and_its_read_stores_no_digests(tmp_path, monkeypatch):
    """The digests are stored only when every map read was still the version listed: a map
    rewritten after the listing (its new bytes read under its old version) would otherwise
    leave a digest that a restore of the old file - its old times - would find again."""
    import storage.listing
    import tasks.register_seg_dataset as task
    from selftrain.stage import get_store
    from storage.listing import VERSIONED_LOCAL_FS, mount_types

    if mount_types().get(tmp_path.stat().st_dev) not in VERSIONED_LOCAL_FS:
        pytest.skip(f"{tmp_path} is on a file system whose times give no version")
    monkeypatch.setattr(storage.listing, "RACY_S", 0.0)  # the files were just written
    img, ann = _set(tmp_path)
    real = task.read_url
    rewritten: list[str] = []

    def rewrite_first(uri: str) -> bytes:
        if uri.endswith("1.png") and not rewritten:  # another tool writes the map after the listing
            rewritten.append(uri)
            label = np.zeros((4, 6), np.uint8)
            label[0, :] = 1
            Image.fromarray(label).save(uri)
        return real(uri)

    monkeypatch.setattr(task, "read_url", rewrite_first)
    store = str(tmp_path / "store")
    ref = register_seg_dataset.fn(store, "d", img, ann, ["bg", "fg"], "labeled")
    assert rewritten and get_store(store).list("d", task.DIGESTS_STAGE) == []
    assert get_store(store).manifest(ref).meta["class_pixels"] == {"bg": 19, "fg": 29}  # the new map's
    register_seg_dataset.fn(store, "d", img, ann, ["bg", "fg"], "labeled")  # listed as it now is
    assert len(get_store(store).list("d", task.DIGESTS_STAGE)) == 1


def test_a_long_listing_keeps_each_files_version_through_its_spilled_runs(tmp_path):
    from storage.listing import ListedFile, sorted_files

    files = [ListedFile(rel=f"{i:03d}.png", uri=f"/x/{i:03d}.png", size=i, version=f"v{i}") for i in range(9, -1, -1)]
    out = list(sorted_files(iter(files), run_size=3))  # four runs spilled to Parquet and merged
    assert [(f.rel, f.version) for f in out] == [(f"{i:03d}.png", f"v{i}") for i in range(10)]


def test_a_label_map_that_changes_between_its_digest_and_its_check_is_refused(tmp_path, monkeypatch):
    """The key names the bytes digested; a map rewritten before it is checked (another tool
    still writing the set) would give a registration whose key names content never checked."""
    import tasks.register_seg_dataset as task

    img, ann = _set(tmp_path)
    real = task.read_url
    seen: list[str] = []

    def rewritten_after_first_read(uri: str) -> bytes:
        seen.append(uri)
        if uri.endswith("1.png") and seen.count(uri) == 2:  # the check's read: the file changed since
            label = np.zeros((4, 6), np.uint8)
            label[0, 0] = 1
            return _png(label)
        return real(uri)

    monkeypatch.setattr(task, "read_url", rewritten_after_first_read)
    with pytest.raises(DatasetError, match=re.escape(f"{ann}/1.png changed while the set was being registered")):
        register_seg_dataset.fn(str(tmp_path / "store"), "d", img, ann, ["bg", "fg"], "labeled")
