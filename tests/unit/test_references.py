"""References are checked by kind at every task's door: swapped arguments fail at once, naming
the argument, instead of computing something else."""

from __future__ import annotations

import importlib

import pytest

from selftrain.kinds import DETECTION, SEGMENTATION
from selftrain.stage import REFERENCE_STAGES, UNLABELED_STAGE, WrongReference, expect
from storage.store import ArtifactStore


def test_the_reference_kinds_name_the_tasks_own_stages():
    stage = {
        name: importlib.import_module(f"tasks.{name}").STAGE
        for name in (
            "register_dataset",
            "register_seg_dataset",
            "shard_images",
            "train_model",
            "score_stability",
            "rank_by_stability",
            "evaluate",
        )
    }
    assert REFERENCE_STAGES["registered set"] == (stage["register_dataset"], stage["register_seg_dataset"])
    assert REFERENCE_STAGES["registered set"] == (DETECTION.dataset_stage, SEGMENTATION.dataset_stage)
    assert REFERENCE_STAGES["unlabeled listing"] == (UNLABELED_STAGE,)
    assert REFERENCE_STAGES["shard"] == (stage["shard_images"],)
    assert REFERENCE_STAGES["model"] == (stage["train_model"],)
    assert REFERENCE_STAGES["pseudo labels"] == (DETECTION.pseudo_stage, SEGMENTATION.pseudo_stage)
    assert REFERENCE_STAGES["stability scores"] == (stage["score_stability"],)
    assert REFERENCE_STAGES["ranking"] == (stage["rank_by_stability"],)
    assert REFERENCE_STAGES["evaluation"] == (stage["evaluate"],)


def test_a_swapped_reference_fails_naming_the_task_and_argument(tmp_path):
    store = ArtifactStore(str(tmp_path))
    model, shard = store.ref("d", "train", "a" * 32), store.ref("d", "shard", "b" * 32)
    expect("pseudo_label_shard", "model", model, "model")  # the right kind passes
    expect("train_model", "init", None, "model")  # an absent optional reference passes
    with pytest.raises(
        WrongReference, match=r"pseudo_label_shard: model must be a model \(stage train\), got .*/d/shard/b"
    ):
        expect("pseudo_label_shard", "model", shard, "model")
    with pytest.raises(WrongReference, match="pseudo labels"):
        expect("train_model", "pseudo", [store.ref("d", "pseudo_boxes", "c" * 32), model], "pseudo labels")
    with pytest.raises(WrongReference, match="got 'train/aaa'"):
        expect("evaluate", "model", "train/aaa", "model")


def test_tasks_check_their_references_before_any_work(tmp_path):
    from tasks.evaluate import evaluate
    from tasks.select_images import select_images

    store = ArtifactStore(str(tmp_path))
    model, val = store.ref("d", "train", "a" * 32), store.ref("d", "dataset", "b" * 32)
    with pytest.raises(WrongReference, match="evaluate: model must be a model"):
        evaluate.fn(str(tmp_path), "det/retinanet_mnv2_256_cpu", val, model)  # swapped
    with pytest.raises(WrongReference, match="select_images: ranking must be a ranking"):
        select_images.fn(str(tmp_path), store.ref("d", "unlabeled", "c" * 32), model, reliable=False)


def test_the_sharding_registration_and_report_tasks_check_their_references(tmp_path):
    from tasks.register_dataset import register_dataset
    from tasks.shard_images import shard_images
    from tasks.write_report import write_report

    store = ArtifactStore(str(tmp_path))
    model, shard = store.ref("d", "train", "a" * 32), store.ref("d", "shard", "b" * 32)
    with pytest.raises(WrongReference, match="shard_images: unlabeled must be an unlabeled listing"):
        shard_images.fn(str(tmp_path), shard, 8)
    with pytest.raises(WrongReference, match="register_dataset: like must be a registered set"):
        register_dataset.fn(str(tmp_path), "d", "/no/such.json", "/img", "val", like=model)
    with pytest.raises(WrongReference, match="write_report: evaluations must be an evaluation"):
        write_report.fn(str(tmp_path), "d", "zoph", {}, {"teacher": model}, [], {})
    with pytest.raises(WrongReference, match="write_report: ranking must be a ranking"):
        write_report.fn(str(tmp_path), "d", "st++", {}, {}, [], {}, ranking=shard)


def test_every_task_says_what_it_does_in_one_line_for_the_ui():
    import inspect
    import pkgutil

    import tasks

    found = 0
    for info in pkgutil.iter_modules(tasks.__path__):
        module = importlib.import_module(f"tasks.{info.name}")
        for obj in vars(module).values():
            if type(obj).__name__ == "Task" and obj.fn.__module__ == module.__name__:
                doc = inspect.getdoc(obj.fn) or ""
                first = doc.splitlines()[0] if doc else ""
                assert first.endswith(".") and first[0].isupper(), f"{info.name}: {first!r}"
                assert obj.description == doc  # what the Prefect UI shows
                found += 1
    assert found == 15
