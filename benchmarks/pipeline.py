"""Whole-run costs, measured side by side in one invocation (not a test: it prints ratios).

    python -m benchmarks.pipeline --task detection
    python -m benchmarks.pipeline --task segmentation --unlabeled 40

Every run is ``selftrain run params.json`` in a process of its own (an embedded Prefect
server each, as a user's command line run), on the demo's data in a fresh folder:

1. **first run**: the whole flow on N unlabeled images (default 320) with the demo's
   schedules (teacher, TTA pseudo labels, student, evaluation, report);
2. **identical re-run**: its wall time over the first run's (goal <= 0.05);
3. **10 % new images**: a re-labeling run (the first run's teacher, no student) after N/10 new
   images landed, against a re-labeling run that labels all N + N/10 from nothing (the
   store's pseudo labels removed first): the runs' wall times, and the pseudo labeling alone
   (the flow's own "pseudo labeling took" line: shard planning, every shard, reused ones
   included) (goal <= 0.15);
4. **peak memory** of a whole run on N and on 10N unlabeled images (the teacher of run 1
   reused by both; the store's pseudo labels removed before each, so that both label every one
   of their images; a new student of ``--memory-student-iters`` each): the largest process's
   peak RSS and the process tree's peak total RSS, sampled every 0.2 s (goal: 10N / N <= 1.1).

New images are copies of the pool's images under new names (decoded and labeled like any
other). The numbers depend on the machine and the sizes: run it on your own, with the sizes of
your runs (``--teacher-iters``, ``--student-iters``, ``--unlabeled``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from benchmarks import save_results

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LABELING = re.compile(r"teacher: pseudo labeling took ([\d.]+) s \((\d+) new of (\d+) images")


class Run:
    """One ``selftrain run`` in its own process: wall time, peak memory, its log."""

    def __init__(self, name: str, params: dict, folder: str, overrides: dict | None = None) -> None:
        self.name, self.params, self.folder = name, dict(params, **(overrides or {})), folder
        self.seconds = 0.0
        self.peak_rss = 0  # bytes: the largest process of the run at its largest
        self.peak_tree_rss = 0  # bytes: every process of the run together, at the largest sample
        self.output = ""

    def __call__(self) -> Run:
        import psutil

        path = os.path.join(self.folder, f"{self.name}.json")
        with open(path, "w") as f:
            json.dump(self.params, f)
        env = dict(os.environ, PREFECT_LOGGING_LEVEL="INFO", PREFECT_HOME=os.path.join(self.folder, "prefect"))
        env.setdefault("SELFTRAIN_WORK_DIR", os.path.join(self.folder, "work"))
        log = os.path.join(self.folder, f"{self.name}.log")
        t0 = time.monotonic()
        with open(log, "w") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "run", path], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
            )
            done = threading.Event()

            def sample() -> None:
                root = psutil.Process(proc.pid)
                while not done.is_set():
                    try:
                        procs = [root, *root.children(recursive=True)]
                        rss = []
                        for p in procs:
                            try:
                                rss.append(p.memory_info().rss)
                            except psutil.Error:
                                pass
                        self.peak_rss = max(self.peak_rss, max(rss, default=0))
                        self.peak_tree_rss = max(self.peak_tree_rss, sum(rss))
                    except psutil.Error:
                        pass
                    done.wait(0.2)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            code = proc.wait()
            done.set()
            sampler.join()
        self.seconds = time.monotonic() - t0
        self.output = open(log).read()
        if code != 0:
            raise SystemExit(f"run {self.name} failed (exit {code}); its log: {log}\n{self.output[-3000:]}")
        labeling = ""
        if self.labeled():
            seconds, new, images = self.labeling()
            labeling = f", pseudo labeling {seconds:.1f} s ({new} new of {images} images)"
        print(
            f"  {self.name}: {self.seconds:.1f} s, peak RSS {self.peak_rss / 2**20:.0f} MiB "
            f"(process tree {self.peak_tree_rss / 2**20:.0f} MiB){labeling}",
            flush=True,
        )
        return self

    def labeled(self) -> bool:
        return bool(LABELING.search(self.output))

    def labeling(self) -> tuple[float, int, int]:
        """(seconds, new images, images) of the teacher's pseudo labeling in this run."""
        m = LABELING.search(self.output)
        if not m:
            raise SystemExit(f"run {self.name}: no 'pseudo labeling took' line in its log")
        return float(m.group(1)), int(m.group(2)), int(m.group(3))


def add_copies(folder: str, count: int, tag: str) -> None:
    """``count`` copies of the folder's original images under new names (``<tag>-<i>-<name>``)."""
    originals = sorted(n for n in os.listdir(folder) if not n.startswith("copy-"))
    for i in range(count):
        name = originals[i % len(originals)]
        shutil.copy(os.path.join(folder, name), os.path.join(folder, f"copy-{tag}-{i:06d}-{name}"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=["detection", "segmentation"], required=True)
    parser.add_argument("--unlabeled", type=int, default=320, help="N: unlabeled images of the first run")
    parser.add_argument("--teacher-iters", type=int, default=None, help="default: the demo's")
    parser.add_argument("--student-iters", type=int, default=None, help="run 1's students (default: the papers')")
    parser.add_argument("--memory-student-iters", type=int, default=60, help="the new students of the memory runs")
    parser.add_argument("--out", default=None, help="work folder (default: a new temporary folder)")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)

    from app import demo

    out = args.out or tempfile.mkdtemp(prefix="selftrain-bench-pipeline-")
    os.makedirs(out, exist_ok=True)
    n = args.unlabeled
    # each task's demo reads its own option: detection takes up to N of its 78 shipped tiles,
    # segmentation composes N images
    demo_args = ["--out", out, "--task", args.task, "--max-unlabeled", str(n), "--num-unlabeled", str(n)]
    for option, value in (("--teacher-iters", args.teacher_iters), ("--student-iters", args.student_iters)):
        demo_args += [option, str(value)] if value is not None else []
    ns = demo.arguments().parse_args(demo_args)
    make_params, _ = demo.DEMOS[args.task]
    params = make_params(ns, out).model_dump(mode="json")
    pool = params["unlabeled"]
    have = len(os.listdir(pool))
    if have < n:
        add_copies(pool, n - have, "base")  # the detection demo ships 78 unlabeled tiles
    print(f"{args.task}: {n} unlabeled images in {pool}; folder {out}", flush=True)

    first = Run("1-first", params, out)()
    rerun = Run("2-rerun", params, out)()
    store = params["store"]
    teachers = [
        json.load(open(os.path.join(root, "MANIFEST.json")))
        for root, _, files in os.walk(store)
        if "MANIFEST.json" in files and os.sep + "train" + os.sep in root
    ]
    (teacher,) = [m for m in teachers if m["meta"].get("role") == "teacher"]
    teacher_ref = f"train/{teacher['key']}"
    relabel = {"teacher": teacher_ref, "retrain_student": False}

    def forget_pseudo_labels() -> None:
        for stage in ("pseudo_boxes", "pseudo_masks"):
            shutil.rmtree(os.path.join(store, params["dataset"], stage), ignore_errors=True)

    # 3. N/10 new images: label only them, against labeling all of them from nothing
    tenth = max(1, n // 10)
    add_copies(pool, tenth, "new")
    incremental = Run("3-plus-10pct", params, out, relabel)()
    forget_pseudo_labels()
    full = Run("3-full-relabel", params, out, relabel)()

    # 4. peak memory: whole runs on N and on 10N images, the teacher reused, a new student each
    for name in os.listdir(pool):
        if name.startswith("copy-new-"):
            os.remove(os.path.join(pool, name))
    students = {"student_iters": args.memory_student_iters}  # a student not trained before
    forget_pseudo_labels()  # both memory runs label every one of their images
    mem_n = Run("4-memory-N", params, out, students)()
    add_copies(pool, 9 * n, "ten")
    forget_pseudo_labels()
    mem_10n = Run("4-memory-10N", params, out, students)()

    inc_s, inc_new, inc_all = incremental.labeling()
    full_s, full_new, full_all = full.labeling()
    result = {
        "task": args.task,
        "unlabeled": n,
        "teacher_iters": params["teacher_iters"],
        "student_iters": params["student_iters"],
        "first_run_s": first.seconds,
        "rerun_s": rerun.seconds,
        "rerun_over_first": rerun.seconds / first.seconds,
        "plus_10pct": {"new": inc_new, "images": inc_all, "labeling_s": inc_s, "run_s": incremental.seconds},
        "full_relabel": {"new": full_new, "images": full_all, "labeling_s": full_s, "run_s": full.seconds},
        "plus_10pct_over_full_labeling": inc_s / full_s,
        "plus_10pct_over_full_run": incremental.seconds / full.seconds,
        "peak_rss_mib": {"N": mem_n.peak_rss / 2**20, "10N": mem_10n.peak_rss / 2**20},
        "peak_tree_rss_mib": {"N": mem_n.peak_tree_rss / 2**20, "10N": mem_10n.peak_tree_rss / 2**20},
        "memory_10n_over_n": mem_10n.peak_rss / mem_n.peak_rss,
        "memory_tree_10n_over_n": mem_10n.peak_tree_rss / mem_n.peak_tree_rss,
    }
    print(
        f"\nidentical re-run / first run: {result['rerun_over_first']:.3f} "
        f"({rerun.seconds:.1f} s / {first.seconds:.1f} s; goal <= 0.05)\n"
        f"+10 % new images / full re-label, pseudo labeling: {result['plus_10pct_over_full_labeling']:.3f} "
        f"({inc_s:.1f} s for {inc_new} new of {inc_all} / {full_s:.1f} s for {full_new}; goal <= 0.15); "
        f"whole re-labeling runs: {result['plus_10pct_over_full_run']:.3f} "
        f"({incremental.seconds:.1f} s / {full.seconds:.1f} s)\n"
        f"peak memory, 10N / N images: largest process {result['memory_10n_over_n']:.3f} "
        f"({mem_10n.peak_rss / 2**20:.0f} / {mem_n.peak_rss / 2**20:.0f} MiB), process tree "
        f"{result['memory_tree_10n_over_n']:.3f} ({mem_10n.peak_tree_rss / 2**20:.0f} / "
        f"{mem_n.peak_tree_rss / 2**20:.0f} MiB; goal <= 1.1)"
    )
    save_results(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
