"""Images on a real S3 server (SeaweedFS) read by DataLoader worker processes.

The parent process reads one image from S3 first, so the filesystem that selftrain.mm.fileio
caches exists (with its event loop) before the workers are forked: an s3fs filesystem used in
a forked child raises "This class is not fork-safe". Inference (pseudo labeling) and training
data loading must both work, with forked and with spawned workers; wrong credentials fail the
batch naming the image, instead of skipping every image.
"""

import io
import json

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.integration

SIZES = [(64, 48), (48, 64), (40, 40), (64, 48), (33, 20)]  # (width, height)


def png_bytes(width: int, height: int, seed: int, mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(seed)
    if mode == "RGB":
        arr = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    else:  # a label map: classes 0 and 1
        arr = rng.integers(0, 2, (height, width), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def s3_images(s3_server, s3_bucket, monkeypatch):
    """Images (and label maps) on S3; selftrain.mm.fileio pointed at the server."""
    import s3fs

    from selftrain.mm import fileio

    monkeypatch.setenv("SELFTRAIN_S3_ENDPOINT_URL", s3_server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.storage_options()["key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.storage_options()["secret"])
    fileio._fs.cache_clear()
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **s3_server.storage_options())
    images, maps = [], []
    for i, (w, h) in enumerate(SIZES):
        fs.pipe_file(f"{s3_bucket}/img/{i}.png", png_bytes(w, h, i))
        fs.pipe_file(f"{s3_bucket}/ann/{i}.png", png_bytes(w, h, i, mode="L"))
        images.append({"image_id": f"{i}.png", "image_uri": f"s3://{s3_bucket}/img/{i}.png"})
        maps.append(f"s3://{s3_bucket}/ann/{i}.png")
    yield images, maps
    fileio._fs.cache_clear()


def read_in_parent(uri: str) -> None:
    """Read one image in this process, as a flow does before its workers start."""
    from selftrain.mm import fileio
    from selftrain.mm.transforms import LoadImageOrMarkUnreadable

    out = LoadImageOrMarkUnreadable()({"img_path": uri})
    assert out["load_error"] == ""
    assert fileio.filesystem("s3") is fileio.filesystem("s3")  # the cached one, now in use


@pytest.fixture(scope="module")
def detector():
    from selftrain.mm.configs import det_model, det_test_pipeline, load_config
    from selftrain.mm.inference import build_model

    cfg = load_config("det/retinanet_mnv2_256_cpu")
    return build_model(det_model(cfg, num_classes=1), "mmdet"), det_test_pipeline(
        cfg, with_ann=False, skip_unreadable=True
    )


def test_forked_inference_workers_read_s3_after_the_parent_did(s3_images, detector):
    from selftrain.mm.inference import predict

    images, _ = s3_images
    read_in_parent(images[0]["image_uri"])
    model, pipeline = detector
    out = list(predict(model, images, pipeline, batch_size=2, num_workers=2))
    assert [im["image_id"] for im, _ in out] == [im["image_id"] for im in images]
    assert [pred.metainfo["load_error"] for _, pred in out] == [""] * len(images)  # none skipped
    assert [tuple(pred.ori_shape) for _, pred in out] == [(h, w) for w, h in SIZES]


def test_spawned_inference_workers_read_s3(s3_images, detector):
    """A spawned worker starts from a fresh interpreter: unpickling the dataset imports
    selftrain.mm, which registers the s3:// backend there."""
    import torch
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import DefaultScope

    from selftrain.mm.inference import ImageList

    images, _ = s3_images
    read_in_parent(images[0]["image_uri"])
    with DefaultScope.overwrite_default_scope("mmdet"):
        dataset = ImageList(images[:2], detector[1])
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=2, num_workers=1, multiprocessing_context="spawn", collate_fn=pseudo_collate
    )
    samples = [s for batch in loader for s in batch["data_samples"]]
    assert [s.metainfo["load_error"] for s in samples] == ["", ""]
    assert [tuple(s.ori_shape) for s in samples] == [(48, 64), (64, 48)]


def test_training_dataloader_workers_read_s3(s3_images, tmp_path):
    """The training path: mmengine's Runner builds the DataLoader (2 forked workers) over a
    segmentation set whose images and label maps are on S3, with the training pipeline."""
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner

    import selftrain.mm  # noqa: F401 - PairListSegDataset, the s3:// backend
    from selftrain.mm.configs import SegSource, load_config, seg_dataset, seg_train_pipeline

    images, maps = s3_images
    read_in_parent(images[0]["image_uri"])
    pairs = tmp_path / "pairs.json"
    pairs.write_text(json.dumps([{"img_path": im["image_uri"], "seg_map_path": m} for im, m in zip(images, maps)]))
    cfg = load_config("seg/deeplabv3plus_mnv2_128_cpu", "seg")
    init_default_scope("mmseg")
    loader = Runner.build_dataloader(
        dict(
            batch_size=2,
            num_workers=2,
            persistent_workers=False,
            sampler=dict(type="DefaultSampler", shuffle=False),
            dataset=seg_dataset(SegSource(str(pairs), ("background", "thing")), seg_train_pipeline(cfg, "s1")),
        ),
        seed=0,
    )
    samples = [s for batch in loader for s in batch["data_samples"]]
    assert [s.img_path for s in samples] == [im["image_uri"] for im in images]
    for s, (w, h) in zip(samples, SIZES):
        assert tuple(s.ori_shape) == (h, w)
        assert set(np.unique(s.gt_sem_seg.data.numpy())) <= {0, 1, 255}


def test_wrong_credentials_fail_the_batch_naming_the_image(s3_images, detector, monkeypatch):
    """Access denied is not a bad image: retried, then InfrastructureError from the worker,
    naming the image; nothing is skipped silently."""
    from selftrain.mm import fileio
    from selftrain.mm.inference import predict
    from selftrain.mm.transforms import InfrastructureError

    images, _ = s3_images
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    fileio._fs.cache_clear()
    model, pipeline = detector
    with pytest.raises(InfrastructureError, match=rf"access denied while reading image {images[0]['image_uri']}"):
        list(predict(model, images[:2], pipeline, batch_size=2, num_workers=2))


def test_registration_and_listing_read_s3_through_the_configured_endpoint(s3_images, s3_bucket, tmp_path, monkeypatch):
    """Users' sets on S3 are listed and read with the store's settings: SELFTRAIN_S3_ENDPOINT_URL
    alone names the service (plain fsspec would go to AWS)."""
    import json
    import os

    import s3fs

    from tasks.list_unlabeled import list_images
    from tasks.register_dataset import register_dataset

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    images, _ = s3_images
    coco = {
        "images": [{"id": 1, "file_name": "0.png", "width": SIZES[0][0], "height": SIZES[0][1]}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]}],
        "categories": [{"id": 1, "name": "thing"}],
    }
    fs = s3fs.S3FileSystem(skip_instance_cache=True, endpoint_url=os.environ["SELFTRAIN_S3_ENDPOINT_URL"])
    fs.pipe_file(f"{s3_bucket}/coco.json", json.dumps(coco).encode())
    ref = register_dataset.fn(
        str(tmp_path / "store"), "s3set", f"s3://{s3_bucket}/coco.json", f"s3://{s3_bucket}/img", "labeled"
    )
    assert ref.stage == "dataset"
    listed = list_images(f"s3://{s3_bucket}/img")
    assert [r["image_uri"] for r in listed] == [im["image_uri"] for im in images]


def test_an_s3_pool_is_listed_page_by_page_and_only_under_its_prefix(s3_server, s3_bucket, monkeypatch):
    """ListObjectsV2 pages (7 keys a page here, 1,000 by default) stream into the sorted listing:
    nested keys and every page are there; a folder marker, other suffixes and a sibling prefix
    that shares the name's start (img2/) are not."""
    import s3fs

    import storage.listing
    from tasks.list_unlabeled import list_images

    monkeypatch.setenv("SELFTRAIN_S3_ENDPOINT_URL", s3_server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.storage_options()["key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.storage_options()["secret"])
    monkeypatch.setattr(storage.listing, "PAGE", 7)
    monkeypatch.setattr(storage.listing, "RUN_SIZE", 10)
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **s3_server.storage_options())
    keys = [f"img/{d}/{i:02d}.jpg" for d in ("b", "a") for i in range(12)] + ["img/top.png"]
    fs.pipe({f"{s3_bucket}/{k}": b"x" * (1 + len(k)) for k in [*keys, "img/notes.txt", "img2/other.png"]})
    fs.pipe_file(f"{s3_bucket}/img/empty/", b"")  # a folder marker some tools write
    listed = list_images(f"s3://{s3_bucket}/img")
    assert [r["image_id"] for r in listed] == sorted(k[len("img/") :] for k in keys)
    assert all(r["image_uri"] == f"s3://{s3_bucket}/img/{r['image_id']}" for r in listed)
    assert all(r["size"] == len(r["image_id"]) + 5 for r in listed)
