"""Batched inference survives bad images and mixed sizes, and fails loudly on infrastructure
faults: real tiny OpenMMLab models (random weights), real files generated here.

Also: pseudo_label_shard and score_stability on shards whose every image is skipped, and the
unlabeled listing following symbolically linked folders (and stopping on a link cycle).
"""

import logging
import os

import cv2
import numpy as np
import pytest

from selftrain.kinds import SEGMENTATION
from selftrain.mm.configs import det_tta_model, det_tta_pipeline, load_config, seg_tta_model, seg_tta_pipeline
from tests.stage_log import stage_lines

SEG_CLASSES = 3


def write_png(path, width: int, height: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    cv2.imwrite(str(path), rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    return str(path)


@pytest.fixture(scope="module")
def det_cfg():
    return load_config("det/retinanet_mnv2_256_cpu")


@pytest.fixture(scope="module")
def det_tta(det_cfg):
    from selftrain.mm.inference import build_model

    return build_model(det_tta_model(det_cfg, num_classes=2), "mmdet")


@pytest.fixture(scope="module")
def seg_cfg():
    return load_config("seg/deeplabv3plus_mnv2_128_cpu", "seg")


@pytest.fixture(scope="module")
def seg_tta(seg_cfg):
    from selftrain.mm.inference import build_model

    return build_model(seg_tta_model(seg_cfg, SEG_CLASSES, 0.5), "mmseg")


def rows(paths):
    return [{"image_id": os.path.basename(p), "image_uri": p} for p in paths]


# ------------------------------------------------------------------ per-image failures


def test_detection_skips_each_bad_image_with_its_reason_and_predicts_the_good_one(tmp_path, det_cfg, det_tta):
    """A 600x1 PNG (decodable, but Resize to 256 px makes it 0 px high), a corrupt file, an
    empty file and a missing file among good images: one batch, no exception; the good images
    are predicted at their own size, the others carry the reason and the placeholder's size."""
    from selftrain.mm.inference import predict
    from selftrain.mm.transforms import EMPTY, MISSING, PLACEHOLDER_SIZE, REJECTED, UNDECODABLE

    good = write_png(tmp_path / "good.png", 64, 48)
    thin = write_png(tmp_path / "thin.png", 600, 1)
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 8)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    tiny = write_png(tmp_path / "tiny.png", 1, 1)
    images = rows([thin, str(corrupt), good, str(empty), str(tmp_path / "missing.png"), tiny])

    out = list(predict(det_tta, images, det_tta_pipeline(det_cfg, [1.0], flip=True), batch_size=8, num_workers=0))

    assert [im["image_id"] for im, _ in out] == [im["image_id"] for im in images]
    err = {im["image_id"]: pred.metainfo["load_error"] for im, pred in out}
    shape = {im["image_id"]: tuple(pred.ori_shape) for im, pred in out}
    assert err["good.png"] == "" and shape["good.png"] == (48, 64)
    assert err["tiny.png"] == "" and shape["tiny.png"] == (1, 1)  # upscaled to 256 px: a valid input
    assert err["thin.png"].startswith(f"{REJECTED} (600x1 px) in TestTimeAug: ")
    assert err["corrupt.png"].startswith(f"{UNDECODABLE} (")
    assert err["empty.png"] == f"{EMPTY} (0 bytes)"
    assert err["missing.png"].startswith(f"{MISSING}: FileNotFoundError")
    for name in ("thin.png", "corrupt.png", "empty.png", "missing.png"):
        assert shape[name] == (PLACEHOLDER_SIZE, PLACEHOLDER_SIZE)


SEGMENTATION_BATCHES = dict(scope=SEGMENTATION.scope, by_shape=SEGMENTATION.batch_by_shape)


def test_segmentation_tta_handles_mixed_sizes_and_degenerate_images(tmp_path, seg_cfg, seg_tta):
    """mmseg refuses a test batch of unequal sizes; predict() runs sub-batches of equal input
    shapes (over every TTA view) and keeps the image order. Each mask has its own image's
    size. A 600x1 image cannot be resized to 128 px (0 px high) and is skipped; a 1x1 image is
    upscaled and predicted."""
    from selftrain.mm.inference import predict
    from selftrain.mm.transforms import REJECTED

    paths = [
        write_png(tmp_path / "a.png", 100, 60, 1),
        write_png(tmp_path / "b.png", 80, 80, 2),
        write_png(tmp_path / "c.png", 100, 60, 3),
        write_png(tmp_path / "thin.png", 600, 1, 4),
        write_png(tmp_path / "dot.png", 1, 1, 5),
    ]
    images = rows(paths)
    pipeline = seg_tta_pipeline(seg_cfg, [0.75, 1.0], flip=True)
    out = list(predict(seg_tta, images, pipeline, batch_size=8, num_workers=0, **SEGMENTATION_BATCHES))

    assert [im["image_id"] for im, _ in out] == ["a.png", "b.png", "c.png", "thin.png", "dot.png"]
    by_id = {im["image_id"]: pred for im, pred in out}
    for name, (h, w) in {"a.png": (60, 100), "b.png": (80, 80), "c.png": (60, 100), "dot.png": (1, 1)}.items():
        pred = by_id[name]
        assert pred.metainfo["load_error"] == ""
        assert tuple(pred.pred_sem_seg.data.shape) == (1, h, w) and tuple(pred.seg_confidence.data.shape) == (1, h, w)
        assert int(pred.pred_sem_seg.data.max()) in set(range(SEG_CLASSES)) | {255}
    assert by_id["thin.png"].metainfo["load_error"].startswith(f"{REJECTED} (600x1 px) in TestTimeAug: ")


def test_segmentation_single_scale_mixed_sizes(tmp_path, seg_cfg):
    """The same for the plain segmentor (stability scoring's model and pipeline)."""
    from selftrain.mm.configs import seg_model, seg_test_pipeline
    from selftrain.mm.inference import build_model, predict

    model = build_model(seg_model(seg_cfg, SEG_CLASSES, pretrained=False), "mmseg")
    images = rows([write_png(tmp_path / "a.png", 100, 60), write_png(tmp_path / "b.png", 80, 80)])
    out = list(
        predict(
            model,
            images,
            seg_test_pipeline(seg_cfg, with_ann=False, skip_unreadable=True),
            batch_size=8,
            num_workers=0,
            **SEGMENTATION_BATCHES,
        )
    )
    assert [(im["image_id"], tuple(p.pred_sem_seg.data.shape)) for im, p in out] == [
        ("a.png", (1, 60, 100)),
        ("b.png", (1, 80, 80)),
    ]


def test_predict_each_decodes_an_image_once_for_all_models_and_matches_each_model_alone(tmp_path, seg_cfg):
    """Stability scoring's K checkpoints: one read of each image, K predictions, each the same
    as that model's own predict()."""
    import torch
    from mmcv.transforms import LoadImageFromFile
    from mmseg.registry import TRANSFORMS

    from selftrain.mm.configs import seg_model, seg_test_pipeline
    from selftrain.mm.inference import build_model, predict, predict_each

    @TRANSFORMS.register_module(force=True)
    class CountedLoad(LoadImageFromFile):
        reads: list[str] = []

        def transform(self, results):
            CountedLoad.reads.append(os.path.basename(results["img_path"]))
            return super().transform(results)

    torch.manual_seed(0)
    models = [build_model(seg_model(seg_cfg, SEG_CLASSES, pretrained=False), "mmseg") for _ in range(3)]
    images = rows([write_png(tmp_path / f"{i}.png", 64 + 16 * (i % 2), 48, seed=i) for i in range(5)])
    pipeline = seg_test_pipeline(seg_cfg, with_ann=False, skip_unreadable=True)
    pipeline = [dict(pipeline[0], type="CountedLoad"), *pipeline[1:]]

    together = list(predict_each(models, images, pipeline, batch_size=2, num_workers=0, **SEGMENTATION_BATCHES))
    assert sorted(CountedLoad.reads) == [im["image_id"] for im in images]  # each image read once
    assert [im["image_id"] for im, _ in together] == [im["image_id"] for im in images]
    for k, model in enumerate(models):
        alone = list(predict(model, images, pipeline, batch_size=2, num_workers=0, **SEGMENTATION_BATCHES))
        for (_, preds), (_, pred) in zip(together, alone, strict=True):
            assert torch.equal(preds[k].seg_logits.data, pred.seg_logits.data)
    # the models differ, so the predictions are not one model's repeated
    assert not torch.equal(together[0][1][0].seg_logits.data, together[0][1][1].seg_logits.data)
    with pytest.raises(ValueError, match="at least one model"):
        list(predict_each([], images, pipeline, batch_size=2))


def test_shape_groups_key_on_every_tta_view():
    import torch

    from selftrain.mm.inference import shape_groups, sub_batch

    t = lambda h, w: torch.zeros(3, h, w)  # noqa: E731
    plain = {"inputs": [t(4, 6), t(5, 5), t(4, 6)], "data_samples": ["a", "b", "c"]}
    assert shape_groups(plain) == [[0, 2], [1]]
    assert sub_batch(plain, [0, 2]) == {"inputs": [plain["inputs"][0], plain["inputs"][2]], "data_samples": ["a", "c"]}
    # two views: images 0 and 1 agree in view 0 but not in view 1
    tta = {
        "inputs": [[t(4, 6), t(4, 6), t(4, 6)], [t(8, 12), t(8, 11), t(8, 12)]],
        "data_samples": [["a0", "b0", "c0"], ["a1", "b1", "c1"]],
    }
    assert shape_groups(tta) == [[0, 2], [1]]
    assert sub_batch(tta, [1])["data_samples"] == [["b0"], ["b1"]]


# ------------------------------------------------------------------ infrastructure faults


class FlakyStorage:
    """A real mmengine storage backend for ``flaky://`` URLs, serving bytes from a folder;
    paths under ``down/`` fail as botocore fails on an unreachable endpoint, under
    ``denied/`` as S3 answers wrong credentials, under ``oom/`` with MemoryError."""

    root = ""
    calls: dict[str, int] = {}

    def __init__(self, **kwargs):
        pass

    def get(self, filepath) -> bytes:
        from botocore.exceptions import ClientError, EndpointConnectionError

        path = str(filepath).split("://", 1)[1]
        FlakyStorage.calls[path] = FlakyStorage.calls.get(path, 0) + 1
        if path.startswith("down/"):
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:9/bucket")
        if path.startswith("denied/"):
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}, "GetObject")
        if path.startswith("oom/"):
            raise MemoryError()
        with open(os.path.join(FlakyStorage.root, path), "rb") as f:
            return f.read()

    def get_text(self, filepath, encoding="utf-8") -> str:
        return self.get(filepath).decode(encoding)


@pytest.fixture
def flaky(tmp_path):
    from mmengine.fileio.backends import BaseStorageBackend, register_backend

    backend = type("FlakyBackend", (FlakyStorage, BaseStorageBackend), {})
    register_backend("flaky", backend, force=True, prefixes="flaky")
    FlakyStorage.root, FlakyStorage.calls = str(tmp_path), {}
    write_png(tmp_path / "good.png", 40, 30)
    (tmp_path / "corrupt.png").write_bytes(b"\xff\xd8\xff garbage")
    return FlakyStorage


@pytest.mark.parametrize(
    "path,kind,error",
    [
        ("down/x.png", "storage unavailable", "EndpointConnectionError"),
        ("denied/x.png", "access denied", "ClientError"),
        ("oom/x.png", "out of memory", "MemoryError"),
    ],
)
def test_infrastructure_errors_are_retried_then_fail_the_batch_naming_the_image(
    flaky, det_cfg, det_tta, path, kind, error
):
    from selftrain.mm.inference import predict
    from selftrain.mm.transforms import READ_ATTEMPTS, InfrastructureError

    images = [
        {"image_id": "good.png", "image_uri": "flaky://good.png"},
        {"image_id": "bad", "image_uri": f"flaky://{path}"},
    ]
    with pytest.raises(InfrastructureError, match=rf"{kind} while reading image flaky://{path} .*: {error}"):
        list(predict(det_tta, images, det_tta_pipeline(det_cfg, [1.0], flip=False), batch_size=4, num_workers=0))
    assert flaky.calls[path] == READ_ATTEMPTS


def test_a_decode_failure_on_the_same_storage_is_skipped(flaky, det_cfg, det_tta):
    from selftrain.mm.inference import predict
    from selftrain.mm.transforms import UNDECODABLE

    images = [
        {"image_id": "good.png", "image_uri": "flaky://good.png"},
        {"image_id": "corrupt.png", "image_uri": "flaky://corrupt.png"},
    ]
    out = list(predict(det_tta, images, det_tta_pipeline(det_cfg, [1.0], flip=False), batch_size=4, num_workers=0))
    errors = [pred.metainfo["load_error"] for _, pred in out]
    assert errors[0] == "" and errors[1].startswith(UNDECODABLE)
    assert flaky.calls == {"good.png": 1, "corrupt.png": 1}  # an image defect is not retried


def test_an_unreachable_http_server_fails_the_batch(tmp_path, det_cfg, det_tta):
    """mmengine's own http backend (urllib) against a closed port: URLError wrapping
    ConnectionRefusedError is storage unavailable, not a bad image."""
    import socket

    from selftrain.mm.inference import predict
    from selftrain.mm.transforms import InfrastructureError

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    uri = f"http://127.0.0.1:{port}/images/a.png"
    images = [
        {"image_id": "good.png", "image_uri": write_png(tmp_path / "good.png", 40, 30)},
        {"image_id": "a.png", "image_uri": uri},
    ]
    with pytest.raises(InfrastructureError, match=rf"storage unavailable while reading image {uri} .*URLError"):
        list(predict(det_tta, images, det_tta_pipeline(det_cfg, [1.0], flip=False), batch_size=4, num_workers=0))


def test_infrastructure_kind_follows_explicit_causes_and_never_blames_storage_for_a_missing_file():
    from botocore.exceptions import ConnectTimeoutError

    from selftrain.mm.transforms import infrastructure_kind

    try:
        try:
            raise ConnectTimeoutError(endpoint_url="http://x")
        except ConnectTimeoutError as inner:
            raise OSError("read failed") from inner
    except OSError as outer:
        assert infrastructure_kind(outer) == "storage unavailable"
    assert infrastructure_kind(RuntimeError("This class is not fork-safe")) == "not fork-safe"
    assert infrastructure_kind(PermissionError("nope")) == "access denied"
    assert infrastructure_kind(FileNotFoundError("bucket/x.png")) is None
    assert infrastructure_kind(ValueError("bad huffman table")) is None


# ------------------------------------------------------------------ all-skipped shards


def test_an_all_skipped_shard_is_a_warning_and_a_shared_foreign_error_fails_it():
    from selftrain.mm.transforms import EMPTY, READ_FAILED, UNDECODABLE
    from selftrain.pseudo_labels import AllImagesFailed, check_all_skipped
    from selftrain.stage import stage_logger

    s = lambda uri, reason: {"image_uri": uri, "reason": reason}  # noqa: E731
    logger = stage_logger()  # outside a Prefect run: the standard 'selftrain' logger
    assert logger is logging.getLogger("selftrain")
    with stage_lines(logging.WARNING) as lines:
        assert check_all_skipped("shard-1", [s("/d/a.png", f"{EMPTY} (0 bytes)")], 2) is False
        assert (
            check_all_skipped(
                "shard-2", [s("/d/a.png", f"{EMPTY} (0 bytes)"), s("/d/b.png", f"{UNDECODABLE} (9 bytes)")], 2
            )
            is True
        )
    assert lines == [
        "every image of shard-2 was skipped (2 of 2): 1 x 'empty file (0 bytes)'; "
        "1 x 'cannot decode the image (9 bytes)'"
    ]
    # the same image defect on every image: still only a warning
    assert check_all_skipped("shard-3", [s("/d/a.png", f"{EMPTY} (0 bytes)")] * 2, 2) is True
    # the same unexplained read error on every image (the image's own URI aside): the shard fails
    same = [s(f"s3://b/{n}.png", f"{READ_FAILED}: KeyError: no reader for b/{n}.png") for n in "xy"]
    with pytest.raises(
        AllImagesFailed,
        match=r"every image of shard-4 \(2\) failed with the same error.*"
        r"no reader for <image>",
    ):
        check_all_skipped("shard-4", same, 2)
    # different unexplained errors: a warning, the shard is written
    assert check_all_skipped("shard-5", [s("/a", f"{READ_FAILED}: KeyError: 1"), s("/b", f"{READ_FAILED}: X")], 2)


def shard_store(tmp_path, det_cfg, monkeypatch):
    """A local store holding what pseudo_label_shard reads: a registered one-class labeled set,
    a 'trained' model (random weights, saved as a checkpoint) and a function making shards."""
    import pyarrow as pa
    import torch

    from selftrain.mm.configs import det_model
    from selftrain.mm.inference import build_model
    from storage.schemas import UNLABELED_IMAGES, to_parquet_bytes
    from storage.store import ArtifactStore

    monkeypatch.setenv("SELFTRAIN_WORK_DIR", str(tmp_path / "work"))
    store = ArtifactStore(str(tmp_path / "store"))
    labeled = store.ref("trees", "dataset", "1" * 32)
    store.write(labeled, {"coco.json": b"{}"}, meta={"classes": ["tree"], "category_ids": [7]})
    ckpt = tmp_path / "last.pth"
    torch.save({"state_dict": build_model(det_model(det_cfg, num_classes=1), "mmdet").state_dict()}, ckpt)
    model = store.ref("trees", "train", "2" * 32)
    with store.writer(model, meta={"last": "last.pth", "checkpoints": 2}) as w:
        for name in ("last.pth", "ckpt-1.pth", "ckpt-2.pth"):
            w.put_file(name, str(ckpt))

    def shard(n: int, rows: list[dict]):
        ref = store.ref("trees", "shard", f"{n:032x}")
        table = pa.Table.from_pylist(rows, schema=UNLABELED_IMAGES)
        store.write(ref, {"images.parquet": to_parquet_bytes(table, UNLABELED_IMAGES)})
        return ref

    return store, labeled, model, shard


def image_folders(tmp_path):
    """Two folders: good, 600x1, corrupt and empty images; corrupt and empty ones only."""
    mixed, bad = tmp_path / "mixed", tmp_path / "bad"
    for folder in (mixed, bad):
        folder.mkdir()
        (folder / "corrupt.png").write_bytes(b"\x89PNG garbage")
        (folder / "empty.png").write_bytes(b"")
    write_png(mixed / "good.png", 64, 48)
    write_png(mixed / "thin.png", 600, 1)
    return mixed, bad


def test_pseudo_label_shard_marks_an_all_skipped_shard_and_fails_on_a_shared_foreign_error(
    tmp_path, det_cfg, monkeypatch
):
    """The task itself (Prefect's task function, outside a run) on three shards: good and
    bad images (written, not all skipped); only bad images (written, ``all_skipped``); and
    images that all fail with the same error that no image defect explains (not written)."""
    from selftrain.pseudo_labels import AllImagesFailed
    from storage.schemas import DET_IMAGE_STATS, read_parquet
    from tasks.list_unlabeled import list_images
    from tasks.pseudo_label_shard import pseudo_label_shard

    store, labeled, model, shard = shard_store(tmp_path, det_cfg, monkeypatch)
    mixed, bad = image_folders(tmp_path)
    kwargs = dict(scales=[1.0], flip=False, batch_size=4, num_workers=0)

    def run(shard_ref):
        return pseudo_label_shard.fn(store.url, "det/retinanet_mnv2_256_cpu", model, shard_ref, labeled, **kwargs)

    ref = run(shard(1, list_images(str(mixed))))
    meta = store.manifest(ref).meta
    assert meta["all_skipped"] is False and sorted(s["image_id"] for s in meta["skipped"]) == [
        "corrupt.png",
        "empty.png",
        "thin.png",
    ]
    stats = read_parquet(store.read(ref, "stats.parquet"), DET_IMAGE_STATS).to_pylist()
    assert [(s["image_id"], s["status"]) for s in stats] == [
        ("corrupt.png", "skipped"),
        ("empty.png", "skipped"),
        ("good.png", "ok"),
        ("thin.png", "skipped"),
    ]

    ref = run(shard(2, list_images(str(bad))))
    assert store.manifest(ref).meta["all_skipped"] is True

    # images under a URL scheme nothing can read: the same KeyError for every image
    rows = [{"image_id": n, "image_uri": f"nosuch://bucket/{n}", "size": 1} for n in ("a.png", "b.png")]
    with pytest.raises(AllImagesFailed, match=r"every image of .* \(2\) failed with the same error.*KeyError"):
        run(shard(3, rows))
    assert len(store.list("trees", "pseudo_boxes")) == 2  # the failed shard left nothing that counts


def test_score_stability_scores_the_good_images_and_marks_an_all_skipped_shard(tmp_path, det_cfg, monkeypatch):
    from tasks.list_unlabeled import list_images
    from tasks.score_stability import score_stability

    store, labeled, teacher, shard = shard_store(tmp_path, det_cfg, monkeypatch)
    mixed, bad = image_folders(tmp_path)

    def run(shard_ref):
        ref = score_stability.fn(
            store.url, "det/retinanet_mnv2_256_cpu", teacher, shard_ref, labeled, score_thr=0.99, batch_size=4
        )
        return store.manifest(ref).meta

    meta = run(shard(1, list_images(str(mixed))))
    assert (meta["scored"], meta["all_skipped"]) == (1, False)
    meta = run(shard(2, list_images(str(bad))))
    assert (meta["scored"], meta["all_skipped"]) == (0, True)


# ------------------------------------------------------------------ listing


def test_unlabeled_listing_follows_a_linked_folder_and_stops_on_a_cycle(tmp_path):
    from tasks.list_unlabeled import list_images

    prefix, elsewhere = tmp_path / "unlabeled", tmp_path / "other-disk"
    (prefix / "sub").mkdir(parents=True)
    elsewhere.mkdir()
    for path in (prefix / "a.png", prefix / "sub" / "b.jpg", elsewhere / "c.png", elsewhere / "d.JPEG"):
        path.write_bytes(b"1234")
    (elsewhere / "notes.txt").write_text("x")
    os.symlink(elsewhere, prefix / "linked")
    os.symlink(prefix, elsewhere / "back-up")  # linked/back-up -> the prefix again: a cycle

    listed = list_images(str(prefix))
    assert [r["image_id"] for r in listed] == ["a.png", "linked/c.png", "linked/d.JPEG", "sub/b.jpg"]
    assert listed[1]["image_uri"] == str(prefix / "linked" / "c.png") and listed[1]["size"] == 4
    with pytest.raises(FileNotFoundError, match=r"unlabeled prefix .*nope does not exist"):
        list_images(str(tmp_path / "nope"))


def test_prefetching_keeps_the_order_raises_in_place_and_stops_when_abandoned():
    import threading
    import time

    from selftrain.mm.inference import prefetched
    from selftrain.mm.transforms import InfrastructureError

    assert list(prefetched(iter(range(7)))) == list(range(7))

    def failing():
        yield 1
        yield 2
        raise InfrastructureError("storage unavailable: s3://b/x.png")

    got = []
    with pytest.raises(InfrastructureError, match="s3://b/x.png"):
        for item in prefetched(failing()):
            got.append(item)
    assert got == [1, 2]  # every item before the failure, then the producer's own error

    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    before = threading.active_count()
    it = prefetched(endless(), depth=2)
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    it.close()  # the consumer stops early (a failed batch, a cancelled task)
    time.sleep(0.2)
    # 3 consumed, at most depth (2) queued, one being handed over and one being read at close
    assert threading.active_count() == before and len(produced) <= 3 + 2 + 1 + 1
