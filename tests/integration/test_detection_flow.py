"""The `self-training` flow end to end on a tiny slice of the real DeepForest data, with real
mmdet training, against a real Prefect server. Runs the demo entry point in subprocesses, as
a user does: a second run computes nothing, and a run killed mid-training resumes."""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from storage.schemas import DET_IMAGE_STATS, RANKING, read_parquet
from storage.store import ArtifactStore

pytestmark = pytest.mark.integration

TINY = [
    "--task",
    "detection",
    "--teacher-iters",
    "60",
    "--student-iters",
    "6",
    "--k",
    "3",
    "--num-labeled",
    "3",
    "--max-unlabeled",
    "4",
    "--max-val",
    "2",
    "--score-threshold",
    "0.0",
    "--shard-size",
    "3",
]


def demo(out, prefect_server, extra=(), wait=True, args=TINY, env_extra=None):
    env = prefect_server.env()
    env["SELFTRAIN_WORK_DIR"] = os.path.join(out, "work")
    env.update(env_extra or {})
    cmd = [sys.executable, "-m", "app.demo", "--out", str(out), *args, *extra]
    log = open(os.path.join(out, f"run-{time.monotonic_ns()}.log"), "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    if not wait:
        return proc, log.name
    proc.wait(timeout=900)
    output = open(log.name).read()
    assert proc.returncode == 0, output[-6000:]
    return output


def run_params(out, prefect_server, params, path):
    """`selftrain run` of a parameters file written at ``path``, as a user runs it (the work
    folder under ``out``); its output, once it succeeded."""
    path.write_text(json.dumps(params))
    env = prefect_server.env()
    env["SELFTRAIN_WORK_DIR"] = os.path.join(out, "work")
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "run", str(path)], env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    return done.stdout + done.stderr


def manifests(out):
    return sorted((p, os.path.getmtime(p)) for p in glob.glob(f"{out}/store/**/MANIFEST.json", recursive=True))


def prepare_with_bad_images(out):
    from selftrain.datasets.deepforest import prepare

    data = prepare(os.path.join(out, "data", "deepforest"), num_labeled=3, max_unlabeled=4, max_val=2)
    unl = data.unlabeled_dir
    (open(os.path.join(unl, "zz_corrupt.png"), "wb")).write(b"\x89PNG this is not an image")
    open(os.path.join(unl, "zz_empty.png"), "wb").close()
    rgb = np.asarray(Image.open(sorted(glob.glob(f"{unl}/*_r*_c*.png"))[0]))
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]), "RGBA").save(f"{unl}/zz_rgba.png")
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(f"{unl}/zz_gray16.png")
    return data


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, prefect_server):
    """Two flow runs on the same inputs started together (two people press Run): every test of
    this module reads their results; test_two_runs_at_once_compute_every_stage_once checks
    that the second waited for the first's stages instead of computing them again."""
    out = str(tmp_path_factory.mktemp("flow"))
    prepare_with_bad_images(out)
    t0 = time.monotonic()
    runs = [demo(out, prefect_server, wait=False)]
    time.sleep(1.0)
    runs.append(demo(out, prefect_server, wait=False))
    outputs = []
    for proc, log in runs:
        proc.wait(timeout=900)
        outputs.append(open(log).read())
        assert proc.returncode == 0, outputs[-1][-6000:]
    stored = sorted(ref.uri for ref in ArtifactStore(os.path.join(out, "store")).list())
    return out, outputs[0], time.monotonic() - t0, outputs[1], stored


def test_flow_runs_end_to_end_and_reports(first_run):
    out, output, *_ = first_run
    assert "detection: teacher" in output and "detection: zoph" in output and "report:" in output
    # shards of 3 images are too small to measure the batch size on: the run says so
    assert "with shard_size 3 every shard runs batch 4" in output
    report = json.load(open(os.path.join(out, "report", "report.json")))
    assert set(report["metrics"]) == {"teacher", "zoph"}
    for m in report["metrics"].values():
        assert 0.0 <= m["bbox_mAP"] <= 1.0 and 0.0 <= m["bbox_mAP_50"] <= 1.0
    assert os.path.exists(os.path.join(out, "report", "report.md"))
    assert report["overlays"] and os.path.exists(os.path.join(out, "report", report["overlays"][0]["file"]))
    store = ArtifactStore(os.path.join(out, "store"))
    teacher = store.list("deepforest", "train")
    assert len(teacher) == 2  # teacher and student
    for ref in teacher:
        files = set(store.manifest(ref).files)
        assert {"ckpt-1.pth", "ckpt-2.pth", "ckpt-3.pth", "best.pth", "config.py"} <= files


def test_two_runs_at_once_compute_every_stage_once(first_run):
    """Each stage output was computed by exactly one of the two runs and reused by the other
    (after waiting for its lease where the other was still computing it): each run's summary
    counts what its own tasks committed (manifests name the flow run), each training ran once
    (one training log per model), each shard was labeled once, and both report the same numbers."""
    out, first, _, second, stored = first_run
    summary = re.compile(r"this run: .*?(\d+) of (\d+) stages computed, (\d+) reused")
    (a_done, a_all, _), (b_done, b_all, _) = [[int(v) for v in summary.search(t).groups()] for t in (first, second)]
    assert a_all == b_all and a_done + b_done == a_all, (first[-800:], second[-800:])
    store = ArtifactStore(os.path.join(out, "store"))
    refs = [store.ref(*uri.split("/")[-3:]) for uri in stored]
    assert all(store.manifest(r).created_by for r in refs)  # every output names the flow run that made it
    for ref in store.list("deepforest", "train"):
        logs = glob.glob(f"{out}/work/deepforest/train/{ref.key}/*-{ref.key[:8]}-*.log")
        assert len(logs) == 1, logs  # trained once, by one process
    shards = store.list("deepforest", "pseudo_boxes")
    images = [
        row["image_id"]
        for ref in shards
        for row in read_parquet(store.read(ref, "stats.parquet"), DET_IMAGE_STATS).to_pylist()
    ]
    assert len(shards) == 3 and len(images) == len(set(images)) == 8  # every unlabeled image labeled once
    metrics = [[line for line in text.splitlines() if line.startswith(" detection:")] for text in (first, second)]
    assert metrics[0] and metrics[0] == metrics[1]


def test_kills_a_full_disk_a_server_restart_and_a_deleted_scratch_folder_end_as_an_uninterrupted_run(
    first_run, prefect_server, tmp_path
):
    """tests/chaos.py with 2 kill points (the script runs many more) and two faults. The first
    kill once the teacher has written its checkpoint at iteration 40 of 60. The next attempt
    resumes from it, not from scratch; as it resumes, the Prefect server stops and starts again
    5 s later on the same port and database (an upgrade, a crash of `make serve`); the run goes
    on training through the restart and meets a full disk when it writes its iteration-60
    checkpoint (a link to /dev/full: the kernel's ENOSPC, as on a real full disk), failing with
    a ScratchError that names the teacher's scratch folder. The space freed, the next attempt
    resumes from iteration 40 again, and once it has logged iteration 50 its scratch folder is
    deleted (a cleaner, a user): it fails with a ScratchError saying so, and the attempt after
    it trains the teacher from scratch. Then a kill at a random moment, and a run to the end.
    After each attempt only complete outputs remain, each verifying; a re-run computes nothing
    that was complete; the final store has the uninterrupted run's stage keys and labels every
    image once. It runs before the tests below that add images to the data (pytest keeps the
    file's order): its reference is the first runs' store, made on the data as prepared."""
    from tests.chaos import Fault, kill_and_rerun, stage_key

    out, _, seconds, _, stored = first_run
    seed = int(os.environ.get("SELFTRAIN_CHAOS_SEED", time.time_ns() % 10**6))
    print(f"kill schedule seed: {seed} (replay: SELFTRAIN_CHAOS_SEED={seed})")
    env = dict(prefect_server.env(), SELFTRAIN_WORK_DIR=str(tmp_path / "work"))
    reference = {stage_key(uri) for uri in stored}

    def teacher_folder() -> str:
        (last,) = glob.glob(f"{tmp_path}/work/*/train/*/last_checkpoint")
        return os.path.dirname(last)

    def at_40():  # mmengine names a checkpoint in last_checkpoint only once it is fully written
        return any(
            open(p).read().strip().endswith("iter_40.pth")
            for p in glob.glob(f"{tmp_path}/work/*/train/*/last_checkpoint")
        )

    restarted, deleted = [], []

    def full_disk_at_60():  # the teacher's next checkpoint goes to a device that is always full
        link = os.path.join(teacher_folder(), "iter_60.pth")
        os.symlink("/dev/full", link)
        return link, f"scratch folder {teacher_folder()}: the disk is full"

    def restart_server():  # mid-teacher: the attempt has resumed training from iteration 40
        prefect_server.stop()
        time.sleep(5)
        prefect_server.start()
        restarted.append(time.monotonic())

    earlier: set[str] = set()

    def folder_to_delete():
        folder = teacher_folder()
        deleted.append(folder)
        earlier.update(glob.glob(f"{folder}/*/vis_data/scalars.json"))  # the attempts before this one
        return None, f"scratch folder {folder}: the folder was deleted while the stage ran"

    def logged_iteration_50(_log: str) -> bool:  # this attempt's OpenMMLab scalars, past its resume
        mine = set(glob.glob(f"{deleted[0]}/*/vis_data/scalars.json")) - earlier
        return any('"iter": 50' in open(p).read() for p in mine)

    outcome = kill_and_rerun(
        ["--out", out, *TINY],
        env,
        str(tmp_path / "store"),
        str(tmp_path),
        reference,
        min(seconds, 60.0),
        2,
        seed,
        first_kill=at_40,
        faults=[
            Fault("disk full", full_disk_at_60, (lambda log: "resumed from the last" in log, restart_server)),
            Fault("scratch deleted", folder_to_delete, (logged_iteration_50, lambda: shutil.rmtree(deleted[0]))),
        ],
    )
    print(*outcome.problems, sep="\n")  # whole, in the captured output: pytest shortens the assertion's
    assert outcome.ok, (seed, outcome.recomputed, outcome.problems)
    assert outcome.kills  # the first attempt was killed mid-teacher
    assert "resumed" in outcome.outputs[1].lower() and "iter: 40" in outcome.outputs[1]
    assert "No space left on device" in outcome.outputs[1]  # the kernel's error, translated
    assert restarted  # the server restarted during that attempt, which went on to its own failure ...
    (run_id,) = set(re.findall(r"/runs/flow-run/([0-9a-f-]{36})", outcome.outputs[1]))
    ask = "from prefect.client.orchestration import get_client\nimport sys\n"
    ask += "with get_client(sync_client=True) as c:\n    print(c.read_flow_run(sys.argv[1]).state.type.value)"
    state = subprocess.run(
        [sys.executable, "-c", ask, run_id], env=prefect_server.env(), capture_output=True, text=True, timeout=120
    )
    assert state.stdout.strip() == "FAILED", state.stdout + state.stderr  # ... and reported it to the restarted server
    assert "resumed" in outcome.outputs[2].lower() and "iter: 40" in outcome.outputs[2]  # the full disk counted nothing
    assert "resumed" not in outcome.outputs[3].lower()  # the deleted folder took its checkpoints: trained anew


def test_config_show_prints_what_a_trained_model_ran_with(first_run, capsys):
    from mmengine.config import Config

    from app.cli import main

    out, *_ = first_run
    store = ArtifactStore(os.path.join(out, "store"))
    student = next(r for r in store.list("deepforest", "train") if store.manifest(r).meta["role"] == "student")
    assert main(["config", "show", student.uri]) == 0
    cfg = Config.fromstring(capsys.readouterr().out, ".py")
    assert cfg.model.type == "LossNormalizedDetector"  # the zoph student's recipe, as it ran
    assert cfg.train_dataloader.sampler.type == "MultiSourceSampler"
    assert cfg.train_cfg.max_iters == cfg.default_hooks.checkpoint.interval * 3
    assert main(["config", "show", f"{out}/store/deepforest/train/{'0' * 32}"]) == 1


def test_unreadable_images_are_skipped_and_listed_and_odd_formats_are_labeled(first_run):
    out, *_ = first_run
    store = ArtifactStore(os.path.join(out, "store"))
    stats = [
        s
        for ref in store.list("deepforest", "pseudo_boxes")
        for s in read_parquet(store.read(ref, "stats.parquet"), DET_IMAGE_STATS).to_pylist()
    ]
    by_id = {s["image_id"]: s for s in stats}
    assert len(stats) == len(by_id) == 8  # 4 tiles + 4 added files, each exactly once
    assert by_id["zz_corrupt.png"]["status"] == "skipped" and by_id["zz_corrupt.png"]["error"]
    assert by_id["zz_empty.png"]["status"] == "skipped"
    assert by_id["zz_rgba.png"]["status"] == "ok" and by_id["zz_gray16.png"]["status"] == "ok"
    report = json.load(open(os.path.join(out, "report", "report.json")))
    assert {s["image_id"] for s in report["pseudo_labels"]["skipped_images"]} == {"zz_corrupt.png", "zz_empty.png"}


def test_st_plus_plus_for_detection_reuses_the_teacher_and_ranks_by_box_agreement(first_run, prefect_server):
    out, *_ = first_run
    store = ArtifactStore(os.path.join(out, "store"))
    teachers = [r for r in store.list("deepforest", "train") if store.manifest(r).meta["role"] == "teacher"]
    # the first run's teacher (S1 preset, shared with its zoph student); an ST-only run would
    # otherwise train its own with the weak augmentation, as the ST++ reference does
    output = demo(out, prefect_server, extra=["--methods", "st", "st++", "--teacher-aug", "S1"])
    assert [r for r in store.list("deepforest", "train") if store.manifest(r).meta["role"] == "teacher"] == teachers
    assert "Iter(train) [ 1/60]" not in output  # the teacher was not trained again
    report = json.load(open(os.path.join(out, "report", "report.json")))
    assert set(report["metrics"]) == {"teacher", "st", "st++ phase 1", "st++"}
    (ranking,) = store.list("deepforest", "ranking")
    rows = read_parquet(store.read(ranking, "ranking.parquet"), RANKING).to_pylist()
    # 6 readable images (the corrupt and the empty one have no score); F1 terms: 0 <= s <= K-1
    assert len(rows) == 6 and sum(r["reliable"] for r in rows) == 3
    assert all(0.0 <= r["stability"] <= 2.0 for r in rows)
    assert set(report["ranking"]["quality"]) == {"reliable", "unreliable"}
    unreliable = {r["image_id"] for r in rows if not r["reliable"]}
    teacher = f"train/{teachers[0].key}"
    relabeled = {
        s["image_id"]
        for ref in store.list("deepforest", "pseudo_boxes")
        if store.manifest(ref).meta.get("model") not in (None, teacher)
        for s in read_parquet(store.read(ref, "stats.parquet"), DET_IMAGE_STATS).to_pylist()
    }
    assert relabeled == unreliable


def test_identical_rerun_computes_nothing(first_run, prefect_server):
    out, first_output, first_seconds, *_ = first_run
    before = manifests(out)
    scratch_before = sorted(glob.glob(f"{out}/work/**/*.pth", recursive=True))
    t0 = time.monotonic()
    output = demo(out, prefect_server)
    second_seconds = time.monotonic() - t0
    assert manifests(out) == before  # no stage written again
    assert sorted(glob.glob(f"{out}/work/**/*.pth", recursive=True)) == scratch_before  # nothing trained
    assert "Iter(train)" not in output
    metric_lines = [line for line in output.splitlines() if line.startswith(" detection:")]
    assert len(metric_lines) == 3  # header, teacher, zoph
    assert metric_lines == [line for line in first_output.splitlines() if line.startswith(" detection:")]
    assert second_seconds < first_seconds / 2
    # the run says what it did; the report it returns (written by the first run) claims nothing about this one
    assert re.search(
        r"this run: 0 of \d+ unlabeled images were new \(labeled in 0 new shards; \d+ reused\); "
        r"0 of \d+ stages computed",
        output,
    )
    assert "were new" not in open(os.path.join(out, "report", "report.md")).read()


def test_new_unlabeled_images_cost_only_new_shards(first_run, prefect_server):
    out, *_ = first_run
    store = ArtifactStore(os.path.join(out, "store"))
    teacher = next(
        f"train/{r.key}" for r in store.list("deepforest", "train") if store.manifest(r).meta["role"] == "teacher"
    )

    def teacher_shards():
        return {
            ref.key: store.manifest(ref)
            for ref in store.list("deepforest", "pseudo_boxes")
            if store.manifest(ref).meta.get("model") == teacher
        }

    before = teacher_shards()
    unlabeled = glob.glob(f"{out}/data/deepforest/images/unlabeled")[0]
    val_tiles = sorted(glob.glob(f"{out}/data/deepforest/images/val/*.png"))[:2]
    for i, path in enumerate(val_tiles):
        shutil.copy(path, os.path.join(unlabeled, f"zz_new{i}.png"))
    output = demo(out, prefect_server)
    after = teacher_shards()
    assert set(before) < set(after)
    for key, manifest in before.items():  # earlier shards reused untouched
        assert after[key] == manifest
    (new,) = set(after) - set(before)
    ref = store.ref("deepforest", "pseudo_boxes", new)
    ids = {s["image_id"] for s in read_parquet(store.read(ref, "stats.parquet"), DET_IMAGE_STATS).to_pylist()}
    assert ids == {"zz_new0.png", "zz_new1.png"}  # only the new images were inferred
    report = json.load(open(os.path.join(out, "report", "report.json")))
    assert report["pseudo_labels"]["images"] == 10
    assert "new_images" not in report["pseudo_labels"]  # a fact of the run, not of the report
    assert "this run: 2 of 10 unlabeled images were new (labeled in 1 new shards; " in output


def test_another_threshold_reuses_every_shard_and_trains_on_exactly_what_it_keeps(first_run, prefect_server):
    """Thresholds are chosen after inference: runs with a higher fixed threshold and with a
    per-class quantile rule label nothing again, and each student trains on exactly the stored
    boxes its thresholds keep (counted here from the shards themselves)."""
    from storage.schemas import PSEUDO_BOXES

    out, *_ = first_run
    store = ArtifactStore(os.path.join(out, "store"))
    teacher = next(
        f"train/{r.key}" for r in store.list("deepforest", "train") if store.manifest(r).meta["role"] == "teacher"
    )
    shards_before = {r.key: store.manifest(r) for r in store.list("deepforest", "pseudo_boxes")}
    teacher_shards = [r for r in store.list("deepforest", "pseudo_boxes") if store.manifest(r).meta["model"] == teacher]
    boxes = [b for r in teacher_shards for b in read_parquet(store.read(r, "boxes.parquet"), PSEUDO_BOXES).to_pylist()]
    assert len({round(b["score"], 6) for b in boxes}) > 3  # every box above the model's floor was stored
    meta = store.manifest(store.list("deepforest", "dataset")[0]).meta
    name = dict(zip(meta["category_ids"], meta["classes"], strict=True))

    def students():
        return {r.key for r in store.list("deepforest", "train") if store.manifest(r).meta["role"] == "student"}

    for extra, fixed in (
        (["--score-threshold", "0.3"], 0.3),
        (["--threshold-rule", "quantile", "--threshold-keep", "0.5"], None),
    ):
        before = students()
        output = demo(out, prefect_server, extra=extra)
        assert "pseudo label shard: computed" not in output  # no inference
        assert {r.key: store.manifest(r) for r in store.list("deepforest", "pseudo_boxes")} == shards_before
        (new,) = students() - before  # one new student, trained on the stored labels
        held = store.manifest(store.ref("deepforest", "train", new)).meta["pseudo_labels"]
        threshold = fixed
        if fixed is None:  # the quantile rule: each class keeps its top half, ties included
            chosen = held["thresholds"]
            assert chosen["rule"] == "quantile" and set(chosen["per_class"]) == {"tree"}
            scores = sorted((b["score"] for b in boxes), reverse=True)
            threshold = chosen["per_class"]["tree"]
            assert threshold == pytest.approx(scores[(len(scores) + 1) // 2 - 1], abs=1e-6)
        expected = [b for b in boxes if b["score"] >= threshold]
        assert held["labels"] == len(expected) > 0
        assert held["per_class"] == {c: sum(name[b["label"]] == c for b in expected) for c in meta["classes"]}
        report = json.load(open(os.path.join(out, "report", "report.json")))
        assert report["thresholds"]["rule"] == held["thresholds"]["rule"]
        assert report["label_stats"]["per_class"]["tree"] == len(expected)
        assert report["label_stats"]["below_threshold"]["tree"] == len(boxes) - len(expected)


def test_reviewed_labels_come_back_as_labeled_data_for_the_next_teacher(first_run, prefect_server, tmp_path):
    """The review loop on real components: export a run's pseudo labels as COCO, correct two
    images (move a box, remove every box of another), import them into the labeled set, and run
    the flow with it: the next teacher trains on 3 + 2 images and the two are not pseudo-labeled
    again."""
    from app.cli import main as cli
    from storage.schemas import UNLABELED_IMAGES

    out, *_ = first_run
    report = os.path.join(out, "report")
    exported = tmp_path / "export.json"
    assert cli(["export", report, "--format", "coco", "--threshold", "0", "--out", str(exported)]) == 0
    coco = json.load(open(exported))
    with_boxes = {x["image_id"] for x in coco["annotations"]}
    a = next(im for im in coco["images"] if im["id"] in with_boxes)
    b = next(im for im in coco["images"] if im["id"] != a["id"])
    boxes = [x for x in coco["annotations"] if x["image_id"] == a["id"]][:1]
    boxes[0]["bbox"] = [10.0, 12.0, 30.0, 40.0]  # the reviewer moved it
    reviewed = {"images": [a, b], "annotations": boxes, "categories": coco["categories"]}  # b: no tree at all
    (tmp_path / "reviewed.json").write_text(json.dumps(reviewed))
    merged = tmp_path / "labeled-plus-reviewed.json"
    argv = ["import-labels", report, "--corrections", str(tmp_path / "reviewed.json"), "--format", "coco"]
    assert cli([*argv, "--out", str(merged)]) == 0
    data = json.load(open(merged))
    assert len(data["images"]) == 5 and data["annotations"][-1]["bbox"] == [10.0, 12.0, 30.0, 40.0]

    params = json.load(open(report + "/report.json"))["parameters"]
    image_root = os.path.join(out, "data", "deepforest", "images")
    params.update(labeled={"ann_file": str(merged), "image_root": image_root}, teacher_iters=30, student_iters=6)
    run_params(out, prefect_server, params, tmp_path / "params.json")
    store = ArtifactStore(os.path.join(out, "store"))
    sets = [store.manifest(r).meta for r in store.list("deepforest", "dataset")]
    assert any(m["ann_file"] == str(merged) and m["num_images"] == 5 for m in sets)
    teachers = [store.manifest(r).meta for r in store.list("deepforest", "train")]
    assert sum(m["role"] == "teacher" for m in teachers) == 2  # a new teacher, on the merged set
    listings = [
        {r["image_id"] for r in read_parquet(store.read(ref, "images.parquet"), UNLABELED_IMAGES).to_pylist()}
        for ref in store.list("deepforest", "unlabeled")
        if not str(store.manifest(ref).meta.get("source")).startswith(("reliable", "unreliable"))  # not ST++'s
    ]
    assert any(a["file_name"] in ids and b["file_name"] in ids for ids in listings)  # the first run's
    (after,) = [ids for ids in listings if a["file_name"] not in ids]  # the next run's: they are labeled now
    assert b["file_name"] not in after and len(after) == len(set().union(*listings)) - 2
