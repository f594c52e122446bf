"""Re-labeling names its model: 'latest' resolves to the newest completed teacher in the store;
the watcher counts images that teacher already labeled as not new."""

from __future__ import annotations

import time

import pyarrow as pa
import pytest

from selftrain.stage import ModelNotFound, find_model
from storage.schemas import UNLABELED_IMAGES, to_parquet_bytes
from storage.store import ArtifactStore


def _model(store, key_char, role="teacher", config="det/retinanet_mnv2_256_cpu"):
    ref = store.ref("d", "train", key_char * 32)
    store.write(ref, {"ckpt-1.pth": b"x"}, meta={"role": role, "model_config": config, "params": {"iters": 3}})
    time.sleep(0.01)  # distinct creation times
    return ref


def test_latest_is_the_newest_completed_teacher_of_the_dataset_and_config(tmp_path):
    store = ArtifactStore(str(tmp_path / "s"))
    with pytest.raises(ModelNotFound, match="no completed teacher of dataset 'd' .* run the self-training flow"):
        find_model(store, "d", "latest")
    old = _model(store, "a")
    newer = _model(store, "b")
    _model(store, "c", role="student")  # newest, but a student
    other = _model(store, "e", config="det/retinanet_r50_fpn_640_coco")  # newest teacher, another config
    assert find_model(store, "d", "latest") == other
    assert find_model(store, "d", "latest", "det/retinanet_mnv2_256_cpu") == newer
    assert find_model(store, "d", f"train/{old.key}") == old
    assert find_model(store, "d", old.uri) == old
    with pytest.raises(ModelNotFound, match="is not a completed model"):
        find_model(store, "d", "train/" + "f" * 32)
    with pytest.raises(ModelNotFound, match="expected 'latest', 'train/<key>'"):
        find_model(store, "d", "best-one")
    with pytest.raises(ModelNotFound, match="was trained with config"):
        find_model(store, "d", f"train/{other.key}", "det/retinanet_mnv2_256_cpu")


def test_relabeling_runs_must_name_their_teacher(tmp_path):
    from pydantic import ValidationError

    from flows.self_training import SelfTrainingParams

    base = dict(
        labeled=dict(ann_file="a.json", image_root="i"),
        val=dict(ann_file="v.json", image_root="i"),
        unlabeled="u",
        store=str(tmp_path / "s"),
    )
    with pytest.raises(ValidationError, match="re-labeling run .* set teacher to 'latest'"):
        SelfTrainingParams(**base, retrain_student=False)
    assert SelfTrainingParams(**base, retrain_student=False, teacher="latest").teacher == "latest"


def test_the_watcher_counts_images_labeled_by_the_latest_teacher(tmp_path):
    from flows.watch_unlabeled import image_rows, latest_teacher_shards

    def labeled_by_latest_teacher(store, dataset):
        return {(f.rel, f.size) for f in image_rows(store, latest_teacher_shards(store, dataset), "labeled")}

    store = ArtifactStore(str(tmp_path / "s"))
    assert labeled_by_latest_teacher(store, "d") == set()
    old, teacher = _model(store, "a"), _model(store, "b")
    rows = [
        {"image_id": "x.png", "image_uri": "/p/x.png", "size": 5},
        {"image_id": "y.png", "image_uri": "/p/y.png", "size": 6},
    ]
    for i, (model, part) in enumerate(((teacher, rows[:1]), (old, rows[1:]))):
        shard = store.ref("d", "shard", str(i) * 32)
        store.write(
            shard,
            {"images.parquet": to_parquet_bytes(pa.Table.from_pylist(part, schema=UNLABELED_IMAGES), UNLABELED_IMAGES)},
        )
        store.write(
            store.ref("d", "pseudo_boxes", str(i + 5) * 32),
            {"boxes.parquet": b""},
            meta={"model": f"train/{model.key}", "shard": f"shard/{shard.key}"},
        )
    assert labeled_by_latest_teacher(store, "d") == {("/p/x.png", 5)}  # y was labeled by an older teacher


def test_deployment_paths_resolve_where_the_flow_runs(tmp_path, monkeypatch):
    from pydantic import ValidationError

    from deploy.deployments import coco_parameters
    from flows.self_training import SelfTrainingParams

    params = coco_parameters()
    assert params["labeled"]["ann_file"].startswith("${SELFTRAIN_DATA}/coco/")  # not fixed at registration
    monkeypatch.delenv("SELFTRAIN_DATA", raising=False)
    with pytest.raises(ValidationError, match=r"names the environment variable\(s\) \['SELFTRAIN_DATA'\], not set"):
        SelfTrainingParams(**params)
    monkeypatch.setenv("SELFTRAIN_DATA", str(tmp_path))
    p = SelfTrainingParams(**params)
    assert p.labeled.ann_file == f"{tmp_path}/coco/annotations/instances_train2017_labeled.json"


def test_artifact_keys_are_per_dataset():
    from selftrain.report import artifact_prefix

    assert artifact_prefix("deepforest") == "deepforest-self-training"
    assert artifact_prefix("coco_2017.v2") == "coco-2017-v2-self-training"
