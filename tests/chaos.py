"""Kill a flow run at random moments, re-run it after each kill, and compare the store it ends
with to an uninterrupted run's.

The harness behind tests/integration/test_detection_flow.py::test_killed_at_random_moments...
(a few kill points in the suite) and, with many more points, a script::

    python -m tests.chaos --points 20 --seed 7          # its own Prefect server; prints a summary

(the script runs cycles of ``--per-cycle`` kills, each cycle on a fresh store, since a re-run
after a complete run finishes in seconds and a kill then hits nothing).

A kill is a SIGKILL of the whole process group of the demo's flow run (the flow, its task
threads and DataLoader workers), at a time drawn uniformly from [1 s, the uninterrupted run's
wall time]: registration, listing, inference of a shard, a manifest publish, training,
evaluation or the report, wherever the run is. After each kill the harness records the
complete stage outputs (their manifests), then starts the run again. The checks:

* every kill left only complete outputs or nothing (each manifest verifies: every file's sha256);
* no output complete before a re-run was computed again by it (its log names what it computed);
* the final store holds exactly the stage keys of the uninterrupted run (and a report: its key
  includes the store's URL), every manifest verifies, and every unlabeled image was labeled
  exactly once.

The seed of the kill schedule is printed first, so that a failure can be replayed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMPUTED = re.compile(r"- [a-z+ ]+: computed.* -> (\S+)")


@dataclass
class Outcome:
    seed: int
    kills: list[float] = field(default_factory=list)  # seconds after the start of each killed attempt
    recomputed: list[str] = field(default_factory=list)  # outputs computed again though complete
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    outputs: list[str] = field(default_factory=list, repr=False)

    @property
    def ok(self) -> bool:
        return not self.recomputed and not self.problems


def complete(store_url: str) -> dict[str, str]:
    """uri -> attempt of every complete output of the store."""
    from storage.store import ArtifactStore

    store = ArtifactStore(store_url)
    return {ref.uri: store.manifest(ref).attempt for ref in store.list()}


def verify(store_url: str) -> list[str]:
    """Problems of a store: outputs whose files do not match their manifests."""
    from storage.store import ArtifactStore, StoreError

    store = ArtifactStore(store_url)
    problems = []
    for ref in store.list():
        for name in store.manifest(ref).files:
            try:
                store.read(ref, name)
            except StoreError as exc:
                problems.append(f"{ref.uri}/{name}: {exc}")
    return problems


def labeled_once(store_url: str) -> list[str]:
    """Problems with the pseudo labels: an unlabeled image labeled twice or never."""
    from storage.schemas import DET_IMAGE_STATS, UNLABELED_IMAGES, read_parquet
    from storage.store import ArtifactStore

    store = ArtifactStore(store_url)
    listings = store.list(stage="unlabeled")
    pool = {
        r["image_id"]
        for ref in listings
        for r in read_parquet(store.read(ref, "images.parquet"), UNLABELED_IMAGES).to_pylist()
    }
    seen: list[str] = []
    for ref in store.list(stage="pseudo_boxes"):
        seen += [r["image_id"] for r in read_parquet(store.read(ref, "stats.parquet"), DET_IMAGE_STATS).to_pylist()]
    twice = sorted({i for i in seen if seen.count(i) > 1})
    never = sorted(pool - set(seen))
    return [f"labeled more than once: {twice}"] * bool(twice) + [f"never labeled: {never}"] * bool(never)


def stage_key(uri: str) -> str:
    """'<dataset>/<stage>/<key>' of an output's URI, the same in any store - except the
    report's key, which includes the run's parameters and with them the store's URL: a report
    is '<dataset>/report'."""
    parts = uri.rstrip("/").split("/")
    return "/".join(parts[-3:-1] if parts[-2] == "report" else parts[-3:])


def stage_keys(store_url: str) -> set[str]:
    """:func:`stage_key` of every complete output of a store."""
    return {stage_key(uri) for uri in complete(store_url)}


Kill = float | Callable[[], bool] | None  # seconds after the start, a condition polled, or never


Event = tuple[Callable[[str], bool], Callable[[], None]]  # (condition on the log so far, action)


def failure(output: str, limit: int = 6000) -> str:
    """What a failed attempt's output says of its failure: the last traceback whole (the first
    frames name what was loading or writing), at most ``limit`` characters (its start and end),
    else the output's last 1500 characters."""
    start = output.rfind("Traceback (most recent call last)")
    text = output[start:] if start >= 0 else output[-1500:]
    return text if len(text) <= limit else f"{text[: limit // 2]}\n[...]\n{text[-limit // 2 :]}"


def run_demo(
    cmd: list[str], env: dict[str, str], log_path: str, kill: Kill, event: Event | None = None
) -> tuple[int | None, str]:
    """Start the demo; SIGKILL its process group ``kill`` seconds after the start, or as soon
    as the condition ``kill()`` holds (None: let it finish); with ``event`` (condition, action),
    run the action once, the first time the condition holds on the run's output so far.
    Returns (exit code, None when killed; its output)."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + (kill if isinstance(kill, float | int) else 1200)
            while proc.poll() is None and time.monotonic() < deadline and not (callable(kill) and kill()):
                if event is not None:
                    with open(log_path) as f:
                        happened = event[0](f.read())
                    if happened:
                        event[1]()
                        event = None
                time.sleep(0.2)
            code: int | None = proc.poll()
            if code is None and kill is None:
                raise TimeoutError(f"{cmd} did not finish within 1200 s")
        finally:  # killed on purpose, timed out, or the event's action failed: nothing keeps running
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    with open(log_path) as f:
        return code, f.read()


@dataclass
class Fault:
    """An attempt that must fail on purpose. ``start()`` runs before it and returns (a path to
    remove once the attempt has ended - the fault undone - or None; the text the attempt's
    output must hold: its error, naming what failed); ``event`` (condition on the output so
    far, action) happens during it."""

    name: str
    start: Callable[[], tuple[str | None, str]]
    event: Event | None = None


def kill_and_rerun(
    demo_args: list[str],
    env: dict[str, str],
    store_url: str,
    folder: str,
    reference: set[str],
    run_seconds: float,
    points: int,
    seed: int,
    first_kill: Callable[[], bool] | None = None,
    faults: list[Fault] | None = None,
) -> Outcome:
    """Run the demo ``points`` times, each killed at a random moment (the first, when given,
    as soon as ``first_kill()`` holds), then once to the end; check every attempt and the
    final store against ``reference`` (stage keys of an uninterrupted run). ``env`` holds the
    Prefect server and a scratch folder of its own. ``Outcome.outputs`` keeps every attempt's log.

    ``faults`` are attempts made after the first, in order (the suite's: a full disk while the
    Prefect server restarts, then the scratch folder deleted mid-training): each must fail
    with the text its fault expects and a ScratchError, and afterwards the same checks hold
    as after a kill."""
    rng = random.Random(seed)
    outcome = Outcome(seed=seed)
    os.makedirs(folder, exist_ok=True)
    started = time.monotonic()
    cmd = [sys.executable, "-m", "app.demo", *demo_args, "--store", store_url]
    env = dict(env, PREFECT_LOGGING_LEVEL="INFO")  # the log names every output a run computed
    schedule: list[tuple[Kill, Fault | None]] = []
    for attempt in range(points):
        kill_after = round(rng.uniform(1.0, run_seconds), 1)
        schedule.append((first_kill if attempt == 0 and first_kill is not None else kill_after, None))
    schedule[1:1] = [(None, fault) for fault in faults or []]
    schedule.append((None, None))  # to the end
    for attempt, (kill, fault) in enumerate(schedule):
        before = complete(store_url)
        undo, expected = fault.start() if fault is not None else (None, "")
        t0 = time.monotonic()
        log = os.path.join(folder, f"attempt-{attempt:02d}.log")
        try:
            code, output = run_demo(cmd, env, log, kill, fault.event if fault is not None else None)
        finally:  # the fault undone whatever happened (a full disk freed)
            if undo is not None and os.path.lexists(undo):
                os.remove(undo)
        outcome.outputs.append(output)
        if fault is not None:
            if code == 0 or "ScratchError" not in output or expected not in output:
                outcome.problems.append(f"attempt {attempt} ({fault.name}) did not fail with {expected!r}")
        elif kill is not None and code is None:
            outcome.kills.append(round(time.monotonic() - t0, 1))
        elif code not in (0, None):
            outcome.problems.append(f"attempt {attempt} exited with {code} (its log: {log}): {failure(output)}")
            return outcome
        for uri in COMPUTED.findall(output):
            if uri in before:
                outcome.recomputed.append(f"attempt {attempt}: {uri}")
        changed = [uri for uri, attempt_id in before.items() if complete(store_url).get(uri) != attempt_id]
        outcome.problems += [f"attempt {attempt}: complete output changed or vanished: {uri}" for uri in changed]
        outcome.problems += [f"attempt {attempt}: {p}" for p in verify(store_url)]
    final = stage_keys(store_url)
    if final != reference:
        outcome.problems.append(
            f"stage keys differ: missing {sorted(reference - final)}, extra {sorted(final - reference)}"
        )
    outcome.problems += labeled_once(store_url)
    outcome.seconds = time.monotonic() - started
    return outcome


TINY = [
    "--task", "detection", "--teacher-iters", "60", "--student-iters", "6", "--k", "3", "--num-labeled", "3",
    "--max-unlabeled", "4", "--max-val", "2", "--score-threshold", "0.0", "--shard-size", "2",
]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=20, help="kills (each followed by a re-run)")
    parser.add_argument("--per-cycle", type=int, default=4, help="kills before a cycle's run to the end")
    parser.add_argument("--seed", type=int, default=None, help="the kill schedule's seed (default: random)")
    parser.add_argument("--out", default=None, help="work folder (default: a new temporary folder)")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    print(
        f"kill schedule seed: {seed} (replay: python -m tests.chaos --points {args.points} --seed {seed})", flush=True
    )
    from tests.prefect_server import PrefectServer
    from tests.processes import stop_group

    out = args.out or tempfile.mkdtemp(prefix="selftrain-chaos-")
    server = PrefectServer(os.path.join(out, "prefect-home")).start()
    try:
        demo = ["--out", out, *TINY]
        env = dict(server.env(), SELFTRAIN_WORK_DIR=os.path.join(out, "work-reference"))
        t0 = time.monotonic()
        code, output = run_demo(
            [sys.executable, "-m", "app.demo", *demo], env, os.path.join(out, "reference.log"), None
        )
        if code != 0:
            print(output[-3000:])
            return 2
        reference_seconds = time.monotonic() - t0
        reference = stage_keys(os.path.join(out, "store"))
        print(f"uninterrupted run: {reference_seconds:.0f} s, {len(reference)} stage outputs", flush=True)
        # Cycles of a few kills each, every cycle on a fresh store and scratch folder: once a
        # run has completed, a re-run finishes in seconds and a later kill would hit nothing.
        outcomes, cycle = [], 0
        while sum(len(o.kills) for o in outcomes) < args.points and cycle < 4 * args.points:
            env["SELFTRAIN_WORK_DIR"] = os.path.join(out, f"work-killed-{cycle}")
            outcome = kill_and_rerun(
                demo,
                env,
                os.path.join(out, f"store-killed-{cycle}"),
                os.path.join(out, f"cycle-{cycle}"),
                reference,
                0.8 * reference_seconds,
                min(args.per_cycle, args.points - sum(len(o.kills) for o in outcomes)),
                seed + cycle,
            )
            outcomes.append(outcome)
            print(f"cycle {cycle}: kills at {outcome.kills} s, ok {outcome.ok}", flush=True)
            cycle += 1
            if not outcome.ok:
                break
    finally:
        stop_group(server.proc, signal.SIGINT, grace=15)
    for o in outcomes:
        print(json.dumps({k: v for k, v in {**o.__dict__, "ok": o.ok}.items() if k != "outputs"}))
    kills = [k for o in outcomes for k in o.kills]
    ok = all(o.ok for o in outcomes)
    print(
        f"{len(kills)} kills in {len(outcomes)} cycles (each: kills, then a run to the end, on a fresh store): "
        + ("every final store equals the uninterrupted run's" if ok else "DIFFERENCES, see above")
        + f" ({sum(o.seconds for o in outcomes) / 60:.1f} min; seed {seed})"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
