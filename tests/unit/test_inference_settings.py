"""The inference batch size and worker count: chosen from measured timings (hand-computed
tables), measured once per device and kept in a real local store, given values used as
they are. The measurement itself on a real model is tested in test_inference_robustness.py."""

from __future__ import annotations

import threading
import time

import pytest

from selftrain.inference_settings import FALLBACK_BATCH, STAGE, inference_settings, settings_ref
from selftrain.mm.calibrate import Timing, batch_candidates, choose, device_description, worker_counts
from storage.store import ArtifactStore

PURPOSE = {"task": "pseudo labels", "scales": [1.0], "flip": True}


@pytest.fixture
def store(tmp_path):
    return ArtifactStore(str(tmp_path / "store"))


def test_the_fastest_batch_size_wins_and_a_tie_goes_to_the_smaller():
    table = [Timing(1, 0, 23.5), Timing(2, 0, 33.3), Timing(4, 0, 24.9), Timing(8, 0, 17.9)]
    assert choose(table) == Timing(2, 0, 33.3)
    assert choose([Timing(1, 0, 30.0), Timing(2, 0, 30.0), Timing(4, 0, 29.0)]).batch_size == 1


def test_more_workers_must_be_more_than_five_percent_faster():
    # at batch 4: 0 workers 40.0; 1 worker 41.9 (4.75 % faster: not enough); 2 workers 42.1 (5.25 %)
    assert choose([Timing(4, 0, 40.0), Timing(4, 1, 41.9)]) == Timing(4, 0, 40.0)
    assert choose([Timing(4, 0, 40.0), Timing(4, 1, 41.9), Timing(4, 2, 42.1)]) == Timing(4, 2, 42.1)
    # a worker count is compared at the fastest batch size only
    assert choose([Timing(2, 0, 30.0), Timing(4, 0, 40.0), Timing(4, 1, 39.0)]) == Timing(4, 0, 40.0)


def test_settings_that_did_not_run_are_never_chosen():
    table = [Timing(1, 0, 20.0), Timing(2, 0, 0.0, "CUDA out of memory")]
    assert choose(table) == Timing(1, 0, 20.0)
    with pytest.raises(ValueError, match="no inference setting ran.*CUDA out of memory"):
        choose([Timing(1, 0, 0.0, "CUDA out of memory")])


def test_candidates_leave_a_timed_batch_after_the_first():
    assert batch_candidates(16) == [1, 2, 4, 8]
    assert batch_candidates(5) == [1, 2]
    assert batch_candidates(1) == [1]
    assert worker_counts(2) == [0, 1]
    assert worker_counts(1) == [0]
    assert worker_counts(16) == [0, 1, 2, 4, 8]


def test_the_device_description_names_the_device_cores_and_torch():
    import torch

    text = device_description()
    assert text.startswith("cuda " if torch.cuda.is_available() else "cpu ")
    assert text.endswith(f"torch {torch.__version__}")


def test_auto_measures_once_stores_the_choice_and_reuses_it(store):
    calls = []

    def measure():
        calls.append(1)
        return Timing(2, 0, 33.3), [Timing(1, 0, 23.5), Timing(2, 0, 33.3), Timing(4, 0, 24.9), Timing(2, 1, 30.2)]

    first = inference_settings(store, "trees", "cfg", PURPOSE, "auto", None, measure)
    assert (first.batch_size, first.workers, first.how) == (2, 0, "measured")
    assert first.ref is not None and first.ref.stage == STAGE
    meta = store.manifest(first.ref).meta
    assert meta["device"] == device_description() and meta["purpose"] == PURPOSE
    assert [(t["batch_size"], t["workers"]) for t in meta["timings"]] == [(1, 0), (2, 0), (4, 0), (2, 1)]

    again = inference_settings(store, "trees", "cfg", PURPOSE, "auto", None, measure)
    assert (again.batch_size, again.workers, again.how, again.ref) == (2, 0, "stored", first.ref)
    assert again.as_meta() == {"batch_size": 2, "workers": 0, "how": "stored", "settings": f"{STAGE}/{first.ref.key}"}
    assert len(calls) == 1
    # an explicit worker count replaces the stored one; the batch size stays the device's
    assert inference_settings(store, "trees", "cfg", PURPOSE, "auto", 3, measure).workers == 3
    # another purpose (stability over 3 checkpoints) or another config is measured on its own
    inference_settings(store, "trees", "cfg", {"task": "stability", "checkpoints": 3}, "auto", None, measure)
    inference_settings(store, "trees", "other-cfg", PURPOSE, "auto", None, measure)
    assert len(calls) == 3 and len(store.list("trees", STAGE)) == 3


def test_the_key_holds_the_device(store):
    a = settings_ref(store, "trees", "cfg", PURPOSE, "cpu X, 2 cores, 2 threads, torch 2.6")
    b = settings_ref(store, "trees", "cfg", PURPOSE, "cuda NVIDIA H200, torch 2.6")
    assert a != b and a.stage == b.stage == STAGE


def test_a_given_batch_size_is_used_as_it_is_and_nothing_is_measured(store):
    def measure():
        raise AssertionError("a given batch size must not be measured")

    run = inference_settings(store, "trees", "cfg", PURPOSE, 8, None, measure)
    assert (run.batch_size, run.workers, run.how, run.ref) == (8, None, "given", None)
    assert run.describe() == "batch 8, default workers, given"
    assert store.list("trees", STAGE) == []
    for bad in (0, -2, "fast", 2.5, True):
        with pytest.raises(ValueError, match="must be 'auto' or an int >= 1"):
            inference_settings(store, "trees", "cfg", PURPOSE, bad, None, measure)


def test_a_shard_too_small_to_measure_uses_the_fallback_and_stores_nothing(store):
    import os

    run = inference_settings(store, "trees", "cfg", PURPOSE, "auto", None, lambda: None)
    assert (run.batch_size, run.how) == (FALLBACK_BATCH, "fallback")
    assert store.list("trees", STAGE) == []  # the next, larger shard measures
    # a shard known to be too small does not even take the lease (no lease file left behind)
    folder = os.path.join(store.root, "trees", STAGE)
    before = sorted(os.listdir(os.path.join(folder, os.listdir(folder)[0])))
    run = inference_settings(store, "trees", "cfg", PURPOSE, "auto", None, lambda: 1 / 0, num_images=5)
    assert run.how == "fallback"
    assert sorted(os.listdir(os.path.join(folder, os.listdir(folder)[0]))) == before


def test_a_bool_batch_size_is_refused_before_any_work():
    from pydantic import ValidationError

    from deploy.deployments import demo_parameters
    from flows.params import SelfTrainingParams

    with pytest.raises(ValidationError, match="inference_batch_size must be 'auto' or an int >= 1, not True"):
        SelfTrainingParams(**{**demo_parameters(), "inference_batch_size": True})
    assert SelfTrainingParams(**{**demo_parameters(), "inference_batch_size": 3}).inference_batch_size == 3


def test_two_shards_at_once_measure_once(store):
    """Two shard tasks of one device ask at the same time: one measures, the other waits for
    its stored choice (the artifact's lease) instead of timing beside it."""
    calls, results = [], []

    def measure():
        calls.append(threading.current_thread().name)
        time.sleep(1.0)  # measuring takes a while; the other caller must wait
        return Timing(4, 0, 40.0), [Timing(4, 0, 40.0)]

    def shard():
        results.append(inference_settings(store, "trees", "cfg", PURPOSE, "auto", None, measure))

    threads = [threading.Thread(target=shard, name=f"shard-{i}") for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(calls) == 1
    assert sorted(r.how for r in results) == ["measured", "stored"]
    assert {(r.batch_size, r.ref) for r in results} == {(4, results[0].ref)}


# ------------------------------------------------------------------ on a real model


def test_measure_settings_times_a_real_model_and_chooses_the_fastest(tmp_path):
    """The tiny detection TTA model (random weights) on 4 generated images of mixed sizes: every
    candidate batch size (1, 2: each leaves a timed batch) with the device's default workers,
    then the other worker counts at the fastest; the choice is :func:`choose` of the table."""
    import cv2
    import numpy as np

    from selftrain.mm.calibrate import measure_settings
    from selftrain.mm.configs import det_tta_model, det_tta_pipeline, load_config
    from selftrain.mm.inference import build_model
    from selftrain.mm.launch import usable_cores

    cfg = load_config("det/retinanet_mnv2_256_cpu")
    tta = build_model(det_tta_model(cfg, num_classes=2), "mmdet")
    pipeline = det_tta_pipeline(cfg, [1.0], True)
    rng = np.random.default_rng(0)
    images = []
    for i, (w, h) in enumerate([(64, 48), (80, 80), (48, 96), (100, 60)]):
        path = str(tmp_path / f"{i}.png")
        cv2.imwrite(path, rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        images.append({"image_id": f"{i}.png", "image_uri": path})

    chosen, table = measure_settings([tta], images, pipeline, scope="mmdet", by_shape=False, sample=4)
    batches = [t.batch_size for t in table if t.workers == 0]
    assert batches[0] == 1 and set(batches) <= {1, 2}
    assert [t.workers for t in table if t.batch_size == chosen.batch_size] == worker_counts(usable_cores())
    assert all(t.images_per_s > 0 for t in table)
    assert chosen == choose(table)
    # fewer images than the sample: nothing measured (a choice made on them would be kept)
    assert measure_settings([tta], images[:3], pipeline, scope="mmdet", by_shape=False, sample=4) is None


class OutOfMemoryAbove:
    """A real model whose test_step fails as CUDA does when a batch holds more than ``most``
    images (fault injection: this machine has no GPU to fill), or with ``error`` when given."""

    def __init__(self, model, most: int, error: Exception | None = None) -> None:
        self.model, self.most, self.error = model, most, error

    def test_step(self, batch):
        inputs = batch["inputs"]  # a TTA batch: a list over views of lists over images
        images = len(inputs[0]) if isinstance(inputs[0], (list, tuple)) else len(inputs)
        if images > self.most:
            raise self.error or RuntimeError(f"CUDA out of memory. Tried to allocate 2.00 GiB (a batch of {images})")
        return self.model.test_step(batch)


def test_a_setting_that_runs_out_of_memory_is_recorded_and_never_chosen(tmp_path, monkeypatch):
    """A segmentor that fails above 2 images a batch, on 8 images: batch 4 is recorded with rate
    0 and its error, the doubling stops there, and the choice is batch 1 or 2 (the doubling's
    slowness stop is off here, so that a slow batch 2 on a busy machine cannot stop it first)."""
    import cv2
    import numpy as np

    import selftrain.mm.calibrate
    from selftrain.mm.calibrate import measure_settings

    monkeypatch.setattr(selftrain.mm.calibrate, "SLOWER", 0.0)
    from selftrain.mm.configs import load_config, seg_tta_model, seg_tta_pipeline
    from selftrain.mm.inference import build_model

    cfg = load_config("seg/deeplabv3plus_mnv2_128_cpu", "seg")
    model = OutOfMemoryAbove(build_model(seg_tta_model(cfg, 3, 0.0), "mmseg"), most=2)
    rng = np.random.default_rng(0)
    images = []
    for i in range(8):
        path = str(tmp_path / f"{i}.png")
        cv2.imwrite(path, rng.integers(0, 256, (64, 96, 3), dtype=np.uint8))
        images.append({"image_id": f"{i}.png", "image_uri": path})
    chosen, table = measure_settings(
        [model], images, seg_tta_pipeline(cfg, [1.0], False), scope="mmseg", by_shape=True, sample=8
    )
    failed = [t for t in table if t.images_per_s == 0]
    assert [(t.batch_size, t.workers) for t in failed] == [(4, 0)]
    assert "CUDA out of memory" in failed[0].note
    assert chosen.batch_size in (1, 2) and chosen == choose(table)
    # any other error is not the setting's own: it propagates (an outage is retried upstream)
    model.error = ConnectionError("storage unreachable")
    with pytest.raises(ConnectionError, match="storage unreachable"):
        measure_settings([model], images, seg_tta_pipeline(cfg, [1.0], False), scope="mmseg", by_shape=True, sample=8)


def test_out_of_memory_at_run_time_halves_the_batch_until_it_fits():
    from selftrain.inference_settings import InferenceSettings, with_smaller_batches

    tried = []

    def work(batch, workers):
        tried.append(batch)
        if batch > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return f"labels at batch {batch}"

    result, ran = with_smaller_batches(InferenceSettings(8, 0, "stored"), work, "pseudo label shard x")
    assert result == "labels at batch 2" and tried == [8, 4, 2]
    assert (ran.batch_size, ran.workers, ran.how) == (2, 0, "stored, halved")
    result, ran = with_smaller_batches(InferenceSettings(2, None, "given"), work, "x")
    assert ran == InferenceSettings(2, None, "given")  # nothing halved

    def always(batch, workers):
        raise RuntimeError("CUDA out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        with_smaller_batches(InferenceSettings(4, 0, "measured"), always, "x")  # at batch 1 too

    def broken(batch, workers):
        raise ValueError("not a memory error")

    with pytest.raises(ValueError, match="not a memory error"):
        with_smaller_batches(InferenceSettings(4, 0, "measured"), broken, "x")


# ------------------------------------------------------------------ mixed precision


def test_label_params_name_the_precision_only_when_it_is_not_fp32():
    from selftrain.pseudo_labels import label_params

    fp32 = label_params([1.0], True, "r")
    assert fp32 == {"scales": [1.0], "flip": True, "checkpoint": "last", "recipe": "r"}  # keys made before
    assert label_params([1.0], True, "r", "fp32") == fp32
    assert label_params([1.0], True, "r", "amp") == dict(fp32, precision="amp")


def test_mixed_precision_runs_the_network_in_bfloat16_and_returns_float32(tmp_path):
    """The tiny detector and segmentor with the same random weights, fp32 and amp, on generated
    images: amp's outputs are float32 (NMS and the TTA merge took them), of the same shapes, and
    close to fp32's (bfloat16 keeps about 3 significant digits)."""
    import cv2
    import numpy as np
    import torch

    from selftrain.mm.configs import (
        det_tta_model,
        det_tta_pipeline,
        load_config,
        seg_tta_model,
        seg_tta_pipeline,
    )
    from selftrain.mm.inference import build_model, mixed_precision, predict

    rng = np.random.default_rng(0)
    images = []
    for i, (w, h) in enumerate([(80, 64), (64, 96)]):
        path = str(tmp_path / f"{i}.png")
        cv2.imwrite(path, rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        images.append({"image_id": f"{i}.png", "image_uri": path})

    det = load_config("det/retinanet_mnv2_256_cpu")
    seg = load_config("seg/deeplabv3plus_mnv2_128_cpu", "seg")
    runs = {}
    for precision in ("fp32", "amp"):
        torch.manual_seed(0)
        model = build_model(det_tta_model(det, num_classes=1), "mmdet", precision=precision)
        runs["det", precision] = [p for _, p in predict(model, images, det_tta_pipeline(det, [1.0], True), 2)]
        torch.manual_seed(0)
        model = build_model(seg_tta_model(seg, 3, 0.0), "mmseg", precision=precision)
        pipeline = seg_tta_pipeline(seg, [1.0], True)
        runs["seg", precision] = [p for _, p in predict(model, images, pipeline, 2, scope="mmseg", by_shape=True)]
    for fp32, amp in zip(runs["det", "fp32"], runs["det", "amp"], strict=True):
        a, b = fp32.pred_instances, amp.pred_instances
        assert b.bboxes.dtype == b.scores.dtype == torch.float32 and b.bboxes.shape == a.bboxes.shape
        assert abs(float(a.scores.max()) - float(b.scores.max())) < 0.02
    for fp32, amp in zip(runs["seg", "fp32"], runs["seg", "amp"], strict=True):
        assert amp.seg_confidence.data.dtype == torch.float32
        assert amp.pred_sem_seg.data.shape == fp32.pred_sem_seg.data.shape
        # reduced precision really ran (the confidences differ), and stayed close
        assert 0 < float((amp.seg_confidence.data - fp32.seg_confidence.data).abs().max()) < 0.02
    with pytest.raises(ValueError, match="precision must be one of"):
        build_model(det_tta_model(det, num_classes=1), "mmdet", precision="fp16")
    with pytest.raises(ValueError, match="has none of the parts"):
        mixed_precision(torch.nn.Linear(2, 2), "cpu")
