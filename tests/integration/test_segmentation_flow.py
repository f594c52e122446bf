"""ST and ST++ for segmentation end to end on a tiny slice of the composed real-photo set,
with real mmseg training, against a real Prefect server (the demo entry point, as a user
runs it): TTA pseudo masks with the ignore label in mask shards, the stability ranking, the
phase-1 student re-labeling exactly the unreliable images, and a re-run that computes nothing."""

from __future__ import annotations

import glob
import json
import os

import numpy as np
import pytest

from storage.masks import iter_mask_shard, read_mask, read_mask_index
from storage.schemas import RANKING, SEG_IMAGE_STATS, read_parquet
from storage.store import ArtifactStore
from tests.integration.test_detection_flow import demo as run_demo
from tests.integration.test_detection_flow import manifests, run_params

pytestmark = pytest.mark.integration

TINY = [
    "--task",
    "segmentation",
    "--methods",
    "st",
    "st++",
    "--teacher-iters",
    "6",
    "--k",
    "3",
    "--num-labeled",
    "3",
    "--num-unlabeled",
    "6",
    "--num-val",
    "3",
    "--shard-size",
    "4",
]


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory, prefect_server):
    out = str(tmp_path_factory.mktemp("segflow"))
    return out, run_demo(out, prefect_server, args=TINY)


def test_st_and_st_plus_plus_run_and_report(seg_run):
    out, output = seg_run
    assert "segmentation: st++" in output
    report = json.load(open(os.path.join(out, "report-seg", "report.json")))
    assert set(report["metrics"]) == {"teacher", "st", "st++ phase 1", "st++"}
    for m in report["metrics"].values():
        assert 0.0 <= m["mIoU"] <= 1.0
    ranking = report["ranking"]
    assert ranking["reliable"] == 3 and ranking["unreliable"] == 3
    assert set(ranking["quality"]) == {"reliable", "unreliable"}  # ground truth diagnostic shown
    assert report["overlays"] and os.path.exists(os.path.join(out, "report-seg", report["overlays"][0]["file"]))
    assert "Stability ranking" in open(os.path.join(out, "report-seg", "report.md")).read()


def test_pseudo_masks_are_shards_with_index_stats_and_the_ignore_label(seg_run):
    out, _ = seg_run
    store = ArtifactStore(os.path.join(out, "store"))
    shards = store.list("composed-seg", "pseudo_masks")
    assert shards
    seen = []
    for ref in shards:
        assert set(store.manifest(ref).files) == {"masks.parquet", "index.parquet", "stats.parquet"}
        stats = {s["image_id"]: s for s in read_parquet(store.read(ref, "stats.parquet"), SEG_IMAGE_STATS).to_pylist()}
        index = read_mask_index(store.read(ref, "index.parquet")).to_pylist()
        data = store.read(ref, "masks.parquet")
        for (image_id, mask, confidence), row in zip(iter_mask_shard(data, confidence=True), index):
            assert row["image_id"] == image_id
            assert np.array_equal(read_mask(data, row["row_group"]), mask)  # random access by the index
            # the plain argmax is stored, every pixel labeled, with its 8-bit confidence beside it
            assert set(np.unique(mask).tolist()) <= {0, 1, 2, 3}
            assert confidence.shape == mask.shape and confidence.dtype == np.uint8
            s = stats[image_id]
            assert (s["height"], s["width"]) == mask.shape
            assert s["ignored_fraction"] == 0.0
            assert 0.0 < s["mean_max_prob"] <= 1.0
            assert float(np.mean(confidence)) / 255 == pytest.approx(s["mean_max_prob"], abs=1 / 255)
            seen.append(image_id)
    # the teacher labeled all 6 images once; the phase-1 student re-labeled the 3 unreliable ones
    assert len(seen) == 9 and len(set(seen)) == 6


def test_students_train_the_teachers_epochs_and_st_masks_ignore_no_pixel(seg_run):
    """The papers' defaults: each ST / ST++ student trains as many epochs over its own set as
    the teacher over the 3 labeled images (6 iterations), and ST's pseudo masks are the plain
    argmax (no confidence threshold, no ignored pixel)."""
    out, _ = seg_run
    store = ArtifactStore(os.path.join(out, "store"))
    iters = {}
    for ref in store.list("composed-seg", "train"):
        meta = store.manifest(ref).meta
        iters.setdefault(meta["role"], []).append(meta["iters"])
    assert iters["teacher"] == [6]
    # the teacher's epoch: the 3 labeled images twice (fewer than 200, as the ST++ reference)
    # st: 2 x 3 + 6 = 12 images -> 6 * 12 / 6 = 12; st++ phase 1 on the 3 reliable images:
    # 1 x 3 + 3 = 6 -> 6; st++ phase 2 on all 6: 12
    assert sorted(iters["student"]) == [6, 12, 12]
    for ref in store.list("composed-seg", "pseudo_masks"):
        stats = read_parquet(store.read(ref, "stats.parquet"), SEG_IMAGE_STATS).to_pylist()
        assert all(s["ignored_fraction"] == 0.0 for s in stats if s["status"] == "ok")


def test_phase_one_student_relabels_exactly_the_unreliable_images(seg_run):
    out, _ = seg_run
    store = ArtifactStore(os.path.join(out, "store"))
    (ranking,) = store.list("composed-seg", "ranking")
    rows = read_parquet(store.read(ranking, "ranking.parquet"), RANKING).to_pylist()
    assert [r["rank"] for r in rows] == list(range(6))
    assert all(0.0 <= r["stability"] <= 2.0 for r in rows)  # K-1 = 2 terms of at most 1
    assert [r["stability"] for r in rows] == sorted((r["stability"] for r in rows), reverse=True)
    unreliable = {r["image_id"] for r in rows if not r["reliable"]}
    (teacher,) = [
        f"train/{r.key}" for r in store.list("composed-seg", "train") if store.manifest(r).meta["role"] == "teacher"
    ]
    by_model: dict[str, set] = {}
    for ref in store.list("composed-seg", "pseudo_masks"):
        ids = {s["image_id"] for s in read_parquet(store.read(ref, "stats.parquet"), SEG_IMAGE_STATS).to_pylist()}
        by_model.setdefault(store.manifest(ref).meta["model"], set()).update(ids)
    assert len(by_model[teacher]) == 6
    (relabeled,) = [ids for model, ids in by_model.items() if model != teacher]
    assert relabeled == unreliable


def test_identical_rerun_computes_nothing(seg_run, prefect_server):
    out, first_output = seg_run
    before = manifests(out)
    scratch = sorted(glob.glob(f"{out}/work/**/*.pth", recursive=True))
    output = run_demo(out, prefect_server, args=TINY)
    assert manifests(out) == before and sorted(glob.glob(f"{out}/work/**/*.pth", recursive=True)) == scratch
    assert "Iter(train)" not in output
    lines = lambda text: [x for x in text.splitlines() if x.startswith(" segmentation:")]  # noqa: E731
    assert lines(output) == lines(first_output) and len(lines(output)) == 5


def test_zoph_student_for_segmentation_runs_in_the_flow(seg_run, prefect_server):
    """method zoph for segmentation: its own teacher (the S1 preset), pseudo masks ignoring pixels
    under 0.5 confidence, a loss-normalised student from the teacher on doubled mixed batches."""
    out, _ = seg_run
    args = [a for a in TINY if a not in ("st", "st++")]
    args[args.index("--methods") + 1 : args.index("--methods") + 1] = ["zoph"]
    output = run_demo(out, prefect_server, args=[*args, "--student-iters", "6"])
    assert "segmentation: zoph" in output
    report = json.load(open(os.path.join(out, "report-seg", "report.json")))
    assert set(report["metrics"]) == {"teacher", "zoph"}
    assert report["thresholds"]["default"] == 0.5 and report["parameters"]["teacher_aug"] == "S1"
    store = ArtifactStore(os.path.join(out, "store"))
    (student,) = [
        r
        for r in store.list("composed-seg", "train")
        if store.manifest(r).meta["role"] == "student" and store.manifest(r).meta["params"].get("zoph_batch")
    ]
    assert store.manifest(student).meta["params"]["zoph_batch"] == "double"
    assert "LossNormalizedSegmentor" in store.read(student, "config.py").decode()


def test_another_confidence_threshold_reuses_the_masks_and_ignores_exactly_the_pixels_below_it(seg_run, prefect_server):
    """A confidence threshold is chosen after inference: an st run at 0.6 labels nothing again,
    and its student's masks ignore exactly the stored pixels whose 8-bit confidence is under
    ceil(0.6 * 255) = 153 (counted here from the stored shards)."""
    out, _ = seg_run
    store = ArtifactStore(os.path.join(out, "store"))
    before = {r.key: store.manifest(r) for r in store.list("composed-seg", "pseudo_masks")}
    students = {r.key for r in store.list("composed-seg", "train")}
    args = [a for a in TINY if a != "st++"]
    output = run_demo(out, prefect_server, args=[*args, "--score-threshold", "0.6"])
    assert {r.key: store.manifest(r) for r in store.list("composed-seg", "pseudo_masks")} == before  # no inference
    (new,) = {r.key for r in store.list("composed-seg", "train")} - students
    held = store.manifest(store.ref("composed-seg", "train", new)).meta["pseudo_labels"]
    (teacher,) = [  # the st runs' teacher (weak augmentation; the zoph run trained another)
        f"train/{r.key}"
        for r in store.list("composed-seg", "train")
        if store.manifest(r).meta["role"] == "teacher" and store.manifest(r).meta["params"]["aug"] == "weak"
    ]
    kept, ignored = np.zeros(4, np.int64), 0
    for ref in store.list("composed-seg", "pseudo_masks"):
        if store.manifest(ref).meta["model"] != teacher:
            continue
        for _, mask, confidence in iter_mask_shard(store.read(ref, "masks.parquet"), confidence=True):
            sure = confidence >= 153
            kept += np.bincount(mask[sure], minlength=4)[:4]
            ignored += int((~sure).sum())
    classes = ["background", "bird", "flower", "fruit"]
    assert held["per_class"] == dict(zip(classes, kept.tolist(), strict=True)) and held["ignored"] == ignored > 0
    assert held["thresholds"]["default"] == 0.6 and "segmentation: st" in output


def test_reviewed_masks_come_back_as_labeled_data_for_the_next_teacher(seg_run, prefect_server, tmp_path, capsys):
    """The review loop for masks on real components: export the run's pseudo masks as PNG label
    maps, correct one (paint a square of bird), keep another unchanged and drop the rest, import
    the folder into the labeled set, and run the flow with the merged set (in a dataset of its
    own, so the other tests' counts stand): its teacher trains on 3 + 2 images registered
    through the split file, with the corrected pixels, and the two are not pseudo-labeled again."""
    from PIL import Image

    from app.cli import main as cli
    from storage.schemas import UNLABELED_IMAGES

    out, _ = seg_run
    report = os.path.join(out, "report-seg")
    exported = tmp_path / "exported"
    assert cli(["export", report, "--format", "png", "--lowest", "4", "--out", str(exported)]) == 0
    a, b, *rest = sorted(exported.rglob("*.png"))
    assert len(rest) == 2  # the 4 least confident of the 6
    corrected = np.array(Image.open(a))
    corrected[4:12, 4:12] = 1  # the reviewer painted a bird
    Image.fromarray(corrected).save(a)
    for path in rest:  # not reviewed: left out of the folder
        path.unlink()
    merged = tmp_path / "merged"
    argv = ["import-labels", report, "--corrections", str(exported), "--format", "png", "--out", str(merged)]
    capsys.readouterr()
    assert cli(argv) == 0
    printed = capsys.readouterr().out
    assert "imported 2 reviewed images (label maps) into the labeled set: 3 + 2 = 5 images" in printed
    assert "note: 1 of 2 imported label maps equal the pseudo masks as exported" in printed  # b, not reviewed
    labeled = json.loads(printed.split("next run: labeled=", 1)[1].split(" (its unlabeled", 1)[0])
    split = (merged / "split.txt").read_text().splitlines()
    assert len(split) == 5 and split[-2:] == [f"unlabeled/img/{a.stem}", f"unlabeled/img/{b.stem}"]
    assert np.array_equal(np.array(Image.open(merged / "ann" / f"{split[-2]}.png")), corrected)

    params = json.load(open(os.path.join(report, "report.json")))["parameters"]
    params.update(dataset="composed-seg-reviewed", labeled=labeled, method=["st"], teacher_iters=6)
    run_params(out, prefect_server, params, tmp_path / "params.json")
    store = ArtifactStore(os.path.join(out, "store"))
    (registered,) = [
        r for r in store.list("composed-seg-reviewed", "seg_dataset") if store.manifest(r).meta["role"] == "labeled"
    ]
    assert store.manifest(registered).meta["num_images"] == 5
    pairs = store.read_json(registered, "pairs.json")
    reviewed = {p["img_path"] for p in pairs if "/unlabeled/" in p["img_path"]}
    assert {os.path.basename(u) for u in reviewed} == {a.name, b.name}
    teachers = [r for r in store.list("composed-seg-reviewed", "train") if store.manifest(r).meta["role"] == "teacher"]
    assert len(teachers) == 1
    (listing,) = store.list("composed-seg-reviewed", "unlabeled")
    uris = {r["image_uri"] for r in read_parquet(store.read(listing, "images.parquet"), UNLABELED_IMAGES).to_pylist()}
    assert uris and not uris & reviewed and len(uris) == 6 - 2
