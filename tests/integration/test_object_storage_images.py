"""Images on a real S3 server are read by OpenMMLab's own loading transform."""

import io

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.integration


def _s3_for_the_project(s3_server, monkeypatch):
    """The test server named to the project as a user names S3 (environment variables), and an
    s3fs filesystem of the test's own, to put objects there."""
    import s3fs

    monkeypatch.setenv("SELFTRAIN_S3_ENDPOINT_URL", s3_server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.storage_options()["key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.storage_options()["secret"])
    return s3fs.S3FileSystem(skip_instance_cache=True, **s3_server.storage_options())


def _png(arr) -> bytes:
    """An uncompressed PNG: a map corrected pixel by pixel keeps its byte size."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(arr, np.uint8)).save(buf, format="PNG", compress_level=0)
    return buf.getvalue()


def test_mmcv_loads_an_image_from_s3(s3_server, s3_bucket, monkeypatch):
    import s3fs

    import selftrain.mm  # noqa: F401  (registers the fsspec backend)
    from selftrain.mm import fileio
    from selftrain.mm.transforms import LoadImageOrMarkUnreadable

    monkeypatch.setenv("SELFTRAIN_S3_ENDPOINT_URL", s3_server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.storage_options()["key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.storage_options()["secret"])
    fileio._fs.cache_clear()
    rgb = np.zeros((6, 9, 3), np.uint8)
    rgb[2, 3] = (10, 20, 30)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **s3_server.storage_options())
    fs.pipe_file(f"{s3_bucket}/img/a.png", buf.getvalue())

    load = LoadImageOrMarkUnreadable()
    out = load({"img_path": f"s3://{s3_bucket}/img/a.png"})
    assert out["load_error"] == "" and out["img"].shape == (6, 9, 3)
    assert tuple(out["img"][2, 3]) == (30, 20, 10)  # mmcv decodes to BGR
    missing = load({"img_path": f"s3://{s3_bucket}/img/missing.png"})
    assert "FileNotFoundError" in missing["load_error"]
    fileio._fs.cache_clear()


def test_a_split_file_on_s3_names_its_images_as_the_listing_does(s3_server, s3_bucket, monkeypatch, tmp_path):
    """VOC's layout on a real S3 server: a split file over a folder that holds more images.
    The registered pairs carry exactly the URIs the unlabeled listing gives the same objects,
    so a labeled image in the pool is left out of pseudo labeling (list_unlabeled compares URIs)."""
    from selftrain.stage import get_store
    from storage.listing import list_files
    from tasks.register_seg_dataset import register_seg_dataset

    fs = _s3_for_the_project(s3_server, monkeypatch)

    for name in ("2007/000032", "2007/000033", "pool_only"):
        fs.pipe_file(f"{s3_bucket}/voc/JPEGImages/{name}.png", _png(np.zeros((4, 6, 3))))
    for name in ("2007/000032", "2007/000033"):
        fs.pipe_file(f"{s3_bucket}/voc/SegmentationClass/{name}.png", _png([[0, 1, 1, 1, 1, 255]] * 4))
    fs.pipe_file(f"{s3_bucket}/voc/train.txt", b"2007/000032\n2007\\000033\n")
    root = f"s3://{s3_bucket}/voc"
    ref = register_seg_dataset.fn(
        str(tmp_path / "store"),
        "voc",
        f"{root}/JPEGImages/",  # a trailing slash, as users write prefixes
        f"{root}/SegmentationClass",
        ["background", "thing"],
        "labeled",
        ".png",
        ".png",
        split=f"{root}/train.txt",
    )
    pairs = get_store(str(tmp_path / "store")).read_json(ref, "pairs.json")
    listed = {f.rel: f.uri for f in list_files(f"{root}/JPEGImages")}
    assert [p["image_id"] for p in pairs] == ["2007/000032", "2007/000033"]
    assert [p["img_path"] for p in pairs] == [listed["2007/000032.png"], listed["2007/000033.png"]]


def test_an_unchanged_set_on_s3_is_registered_again_without_a_get_of_its_label_maps(
    s3_server, s3_bucket, monkeypatch, tmp_path
):
    """On a real S3 server a map's version is its ETag, the MD5 of its bytes (one-part
    uploads), from the listing or (with a split file) each object's HEAD: registering an
    unchanged set again GETs no label map; a map uploaded again with the same bytes is the same
    version; one overwritten with other bytes of the same size is read again and registered
    anew - also through a split file, in the process whose filesystem object saw the old one."""
    import tasks.register_seg_dataset as task
    from selftrain.stage import get_store

    fs = _s3_for_the_project(s3_server, monkeypatch)

    label = _png([[0, 1, 1, 1, 1, 255]] * 4)
    for name in ("a", "b"):
        fs.pipe_file(f"{s3_bucket}/set/img/{name}.png", _png(np.zeros((4, 6, 3))))
        fs.pipe_file(f"{s3_bucket}/set/ann/{name}.png", label)
    fs.pipe_file(f"{s3_bucket}/set/train.txt", b"a\nb\n")
    root = f"s3://{s3_bucket}/set"
    store = str(tmp_path / "store")
    reads: list[str] = []
    real = task.read_url
    monkeypatch.setattr(task, "read_url", lambda uri: reads.append(uri) or real(uri))

    def map_reads() -> list[str]:
        return sorted(u.rsplit("/", 1)[1] for u in reads if "/ann/" in u)

    args = (store, "s3set", f"{root}/img", f"{root}/ann", ["background", "thing"], "labeled", ".png", ".png")
    ref = task.register_seg_dataset.fn(*args)
    assert map_reads() == ["a.png", "a.png", "b.png", "b.png"]  # for their digests, then checked
    assert len(get_store(store).list("s3set", task.DIGESTS_STAGE)) == 1
    reads.clear()
    assert task.register_seg_dataset.fn(*args) == ref
    assert reads == []
    # a split file: each map's HEAD gives the version the listing gave, so nothing is read either
    assert task.register_seg_dataset.fn(*args, split=f"{root}/train.txt") == ref
    assert map_reads() == [] and reads == [f"{root}/train.txt"]
    fs.pipe_file(f"{s3_bucket}/set/ann/b.png", label)  # uploaded again: the same bytes, the same ETag
    reads.clear()
    assert task.register_seg_dataset.fn(*args) == ref and map_reads() == []
    corrected = _png([[0, 0, 1, 1, 1, 255]] * 4)  # a pixel per row corrected: the same byte size
    assert len(corrected) == len(label)
    fs.pipe_file(f"{s3_bucket}/set/ann/b.png", corrected)
    again = task.register_seg_dataset.fn(*args, split=f"{root}/train.txt")
    assert again != ref
    assert get_store(store).manifest(again).meta["class_pixels"] == {"background": 12, "thing": 28}
    assert len(get_store(store).list("s3set", task.DIGESTS_STAGE)) == 2
