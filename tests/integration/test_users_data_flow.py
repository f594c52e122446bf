"""The whole flow on sets shaped like users' data (tests/messy_data.py), both tasks, with real
mmdet / mmseg training of a few iterations against a real Prefect server, run from the
command line as a user does (`selftrain run params.json`). Asserts the values that were wrong
or crashed before: pseudo boxes carry category ids (not label indices), images of every size
and format are labeled at their decoded size, the bad ones are skipped with their reason,
metrics are real numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from storage.schemas import DET_IMAGE_STATS, PSEUDO_BOXES, SEG_IMAGE_STATS, read_parquet
from storage.store import ArtifactStore
from tests import messy_data

pytestmark = pytest.mark.integration


def run_cli(tmp, prefect_server, params: dict) -> str:
    path = os.path.join(tmp, "params.json")
    with open(path, "w") as f:
        json.dump(params, f)
    env = prefect_server.env()
    env["SELFTRAIN_WORK_DIR"] = os.path.join(tmp, "work")
    env["PREFECT_LOGGING_LEVEL"] = "INFO"  # what a user sees in the console
    proc = subprocess.run(
        [sys.executable, "-m", "app.cli", "run", path], env=env, capture_output=True, text=True, timeout=1200
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    return proc.stdout + proc.stderr


def stats_of(store: ArtifactStore, dataset: str, stage: str, schema) -> dict[str, dict]:
    rows = {}
    for ref in store.list(dataset, stage):
        rows.update({r["image_id"]: r for r in read_parquet(store.read(ref, "stats.parquet"), schema).to_pylist()})
    return rows


EXPECTED_SIZES = {name: (w, h) for name, w, h, _ in messy_data.UNLABELED_OK}


def check_skips(stats: dict[str, dict], bad: dict[str, str]) -> None:
    assert set(stats) == set(EXPECTED_SIZES) | set(bad)  # the symlinked folder's image is listed
    for image_id, (w, h) in EXPECTED_SIZES.items():
        s = stats[image_id]
        assert s["status"] == "ok", s
        assert (s["width"], s["height"]) == (w, h), image_id  # decoded size: EXIF applied
    for image_id in bad:
        assert stats[image_id]["status"] == "skipped" and stats[image_id]["error"], stats[image_id]


def test_detection_on_users_kinds_of_data(tmp_path, prefect_server):
    data = messy_data.detection_set(str(tmp_path / "data"))
    store_url = str(tmp_path / "store")
    output = run_cli(
        str(tmp_path),
        prefect_server,
        dict(
            dataset="messy",
            labeled=data["labeled"],
            val=data["val"],
            unlabeled=data["unlabeled"],
            teacher_iters=30,
            student_iters=6,
            k=3,
            score_threshold=0.0,
            class_thresholds={"dog": 0.0},
            shard_size=4,
            store=store_url,
        ),
    )
    assert "report:" in output
    # One line per stage (reused or computed, where), progress lines, no OpenMMLab dumps.
    for line in (
        "register labeled set: computed",
        "train teacher: computed in",
        "train teacher: [",
        "it/s, ETA",
        "OpenMMLab log in",
        "pseudo label shard: computed",
        "images/s",
        "evaluate teacher: computed",
    ):
        assert line in output, line
    for dump in ("System environment", "Config:", "Average Precision  (AP)", "loading annotations into memory"):
        assert dump not in output, dump
    store = ArtifactStore(store_url)
    labeled = [r for r in store.list("messy", "dataset") if store.manifest(r).meta["role"] == "labeled"][0]
    meta = store.manifest(labeled).meta
    assert meta["classes"] == ["cat", "dog"] and meta["category_ids"] == [3, 7]
    assert meta["num_images"] == 7 and meta["num_boxes"] == 7 and meta["num_crowd"] == 1
    boxes = [
        b
        for ref in store.list("messy", "pseudo_boxes")
        for b in read_parquet(store.read(ref, "boxes.parquet"), PSEUDO_BOXES).to_pylist()
    ]
    assert boxes and {b["label"] for b in boxes} <= {3, 7}  # category ids, never label indices 0/1
    check_skips(stats_of(store, "messy", "pseudo_boxes", DET_IMAGE_STATS), data["bad"])
    report = [r for r in store.list("messy", "report")][0]
    metrics = store.read_json(report, "report.json")["metrics"]
    for m in metrics.values():
        assert 0.0 <= m["bbox_mAP"] <= 1.0 and 0.0 <= m["bbox_mAP_50"] <= 1.0  # never the -1 of an empty set

    # A re-labeling run of new images with the teacher just trained: it trains nothing.
    trained = {r.key for r in store.list("messy", "train")}
    teacher = [r for r in store.list("messy", "train") if store.manifest(r).meta["role"] == "teacher"][0]
    landed = tmp_path / "landed"
    landed.mkdir()
    messy_data.save(messy_data._canvas(64, 40, seed=9), str(landed / "n1.png"))
    run_cli(
        str(tmp_path),
        prefect_server,
        dict(
            dataset="messy",
            labeled=data["labeled"],
            val=data["val"],
            unlabeled=str(landed),
            teacher_iters=900,
            score_threshold=0.0,
            retrain_student=False,
            teacher="latest",
            store=store_url,
        ),
    )
    assert {r.key for r in store.list("messy", "train")} == trained  # no 900-iteration teacher appeared
    relabeled = [
        store.manifest(r).meta["model"]
        for r in store.list("messy", "pseudo_boxes")
        if "n1.png"
        in {s["image_id"] for s in read_parquet(store.read(r, "stats.parquet"), DET_IMAGE_STATS).to_pylist()}
    ]
    assert relabeled == [f"train/{teacher.key}"]


def test_segmentation_on_users_kinds_of_data(tmp_path, prefect_server):
    data = messy_data.segmentation_set(str(tmp_path / "data"))
    for part in ("labeled", "val"):
        data[part]["label_map"] = {"255": 1}
    store_url = str(tmp_path / "store")
    run_cli(
        str(tmp_path),
        prefect_server,
        dict(
            dataset="messy-seg",
            task="segmentation",
            method="st",
            labeled=data["labeled"],
            val=data["val"],
            unlabeled=data["unlabeled"],
            teacher_iters=6,
            student_iters=3,
            k=3,
            tta_scales=[0.75, 1.0],
            shard_size=16,
            strong_aug="strong_no_hue",  # a non-default strong augmentation reaches the student's config
            store=store_url,
        ),
    )
    store = ArtifactStore(store_url)
    (student,) = [r for r in store.list("messy-seg", "train") if store.manifest(r).meta["role"] == "student"]
    assert store.manifest(student).meta["params"]["strong_aug"] == "strong_no_hue"
    trained = store.read(student, "config.py").decode()
    assert "hue=0.0" in trained and "hue=0.25" not in trained and "RandomFillCutOut" in trained
    stats = stats_of(store, "messy-seg", "pseudo_masks", SEG_IMAGE_STATS)
    check_skips(stats, data["bad"])  # mixed sizes in one batch of 8: no crash, each at its own size
    report = store.list("messy-seg", "report")[0]
    metrics = store.read_json(report, "report.json")["metrics"]
    assert set(metrics) == {"teacher", "st"} and all(0.0 <= m["mIoU"] <= 1.0 for m in metrics.values())
