"""Train a detector or segmentor with mmengine's Runner: a teacher, or a student
(Zoph et al. for detection; ST / ST++ phases for both tasks).

Keeps K evenly spaced checkpoints (ckpt-1.pth .. ckpt-K.pth, the last being the end of the
schedule) plus best.pth (best validation bbox mAP), docs/design.md §2.3. A killed run resumes from
its last complete checkpoint (``selftrain.stage.resume_point``): the scratch folder is keyed by
the stage key, so the re-run finds it.
"""

from __future__ import annotations

import glob
import json
import os
import time

from selftrain.kinds import kind_of
from selftrain.mm.configs import (
    NO_STRONG,
    STRONG,
    WEAK,
    config_digest,
    count_images,
    epoch_matched_iters,
    oversample_times,
    recipe_digest,
    teacher_set_size,
    training_stage,
)
from selftrain.mm.launch import gpus, train_distributed
from selftrain.mm.progress import quiet_openmmlab
from selftrain.pseudo_labels import Thresholds
from selftrain.stage import (
    LABELED_INPUT,
    RELABELED_INPUT,
    best_checkpoint,
    check_checkpoints,
    done_or_claimed,
    expect,
    fetch_checkpoint,
    get_store,
    log_stage,
    resume_point,
    scratch_dir,
    scratch_guard,
    stage_logger,
    stage_task,
)
from selftrain.student_data import pseudo_sources
from storage.keys import digest_json
from storage.store import ArtifactRef

STAGE, VERSION = "train", 1


@stage_task("train_model", log_prints=False)  # prints go to the stage's log file
def train_model(
    store_url: str,
    model_config: str,
    labeled: ArtifactRef,
    val: ArtifactRef | None,
    *,
    role: str,
    iters: int | None,
    k: int,
    seed: int,
    aug: str = "S1",
    pretrained: bool = True,
    init: ArtifactRef | None = None,
    pseudo: list[ArtifactRef] | None = None,
    method: str = "zoph",
    alpha: float = 1.0,
    reliable_only: ArtifactRef | None = None,
    relabeled: list[ArtifactRef] | None = None,
    teacher_iters: int | None = None,
    zoph_batch: str = "double",
    normalize_loss: bool = True,
    thresholds: ArtifactRef | None = None,
    strong_aug: str = STRONG,
) -> ArtifactRef:
    """Train a teacher or a student with mmengine's Runner, keeping K evenly spaced checkpoints.

    role 'teacher': labeled data only. A student trains on labeled + pseudo data: method
    'zoph' (both tasks): half/half batches, loss normalisation with weight alpha, initialised
    from ``init``; method 'st' (both tasks): labeled oversampled, strong augmentation on
    pseudo images, re-initialised. ST++: ``reliable_only`` (a ranking) keeps only the
    reliable images of ``pseudo``; ``relabeled`` shards are added whole. ``iters`` must be a
    multiple of ``k``; None for an 'st' student: as many epochs over its own training set as
    the teacher's ``teacher_iters`` over the labeled set (:func:`epoch_matched_iters`).
    ``zoph_batch``: 'double' (the paper: B human + B pseudo images per step) or 'split'
    (B/2 + B/2). ``normalize_loss=False``: a zoph student on the plain weighted loss
    ``Lh + alpha * Lp`` (an ablation of the paper's Appendix B). ``thresholds`` (required
    with ``pseudo``; tasks/choose_thresholds.py): which stored pseudo labels a student trains
    on - applied here, so that another threshold re-uses every pseudo-label shard; what was
    kept is recorded in the manifest (``pseudo_labels``). ``strong_aug`` (an 'st' student): the
    strong augmentation of its pseudo-labeled images, model_configs/aug/<strong_aug>.py - 'strong',
    the ST++ reference's, by default - or 'none' (the weak one only). A killed training resumes from
    its last complete checkpoint. Raises WrongReference for a swapped reference, ConfigError for an
    unknown ``strong_aug``, ValueError for a
    method the task lacks, a missing schedule, missing thresholds or a ``strong_aug`` other than
    the default for a training that is not an 'st' student."""
    from mmengine.runner import Runner

    for argument, value, what in (
        ("labeled", labeled, "registered set"),
        ("val", val, "registered set"),
        ("init", init, "model"),
        ("pseudo", pseudo, "pseudo labels"),
        ("reliable_only", reliable_only, "ranking"),
        ("relabeled", relabeled, "pseudo labels"),
        ("thresholds", thresholds, "thresholds"),
    ):
        expect("train_model", argument, value, what)
    if strong_aug != STRONG and not (pseudo and method == "st"):
        trained = f"a {method} student" if pseudo else f"a {role} (no pseudo labels)"
        raise ValueError(
            f"train_model: strong_aug={strong_aug!r} applies to st / st++ students only (pseudo labels, "
            f"method 'st'), not to {trained}: it would be ignored"
        )
    store = get_store(store_url)
    kind = kind_of(labeled)
    cfg = kind.load_config(model_config)
    if pseudo and method not in ("zoph", "st"):
        raise ValueError(f"unknown student method {method!r}")
    if pseudo and method not in kind.methods:
        raise ValueError(f"{kind.name} students train with {list(kind.methods)}, not {method!r}")
    if iters is None and not (pseudo and method == "st" and teacher_iters):
        raise ValueError("train_model: iters is required, except for an st student given teacher_iters")
    if pseudo and thresholds is None:
        raise ValueError("train_model: a student needs thresholds (tasks/choose_thresholds.py) for its pseudo labels")
    inputs: dict[str, ArtifactRef | str] = {LABELED_INPUT: labeled}  # refs, or digests of ref lists
    if val is not None:
        inputs["val"] = val
    if init is not None:
        inputs["init"] = init
    if pseudo:
        inputs["pseudo"] = digest_json([f"{r.stage}/{r.key}" for r in pseudo])
    if reliable_only is not None:
        inputs["reliable_only"] = reliable_only
    if relabeled:
        inputs[RELABELED_INPUT] = digest_json([f"{r.stage}/{r.key}" for r in relabeled])
    if pseudo and thresholds is not None:
        inputs["thresholds"] = thresholds
    params = {
        "role": role,
        "iters": iters,
        "k": k,
        "seed": seed,
        "aug": aug.lower(),
        "pretrained": pretrained,
        "alpha": alpha if pseudo and method == "zoph" else None,
    }
    if pseudo and method != "zoph":
        params["method"] = method  # absent for zoph: keys of earlier detection runs stay valid
    # the recipe files this training is built from (stage config, _base_ files, augmentation)
    params["recipe"] = recipe_digest(
        (training_stage(kind.config_folder, method if pseudo else None),),
        ((WEAK, strong_aug) if strong_aug != NO_STRONG else (WEAK,)) if pseudo and method == "st" else (aug,),
    )
    if pseudo and method == "st" and strong_aug != STRONG:
        params["strong_aug"] = strong_aug  # absent by default: keys of earlier st students stay valid
    if pseudo and method == "st":
        if iters is None:
            params["epochs_of_teacher_iters"] = teacher_iters
    n_gpus = gpus()
    if n_gpus > 1:  # the model config's batch is per process: N processes train on N times the batch
        params["processes"] = n_gpus  # absent for one: keys of one-process trainings stay valid
    if pseudo and method == "zoph":
        params["zoph_batch"] = zoph_batch
        if not normalize_loss:  # absent by default: keys of normalised students stay valid
            params["normalize_loss"] = False
    ref = store.stage_ref(labeled.dataset, STAGE, VERSION, config_digest(cfg), inputs, params)
    what = role if not pseudo else f"{method} {role}"
    if done_or_claimed(store, ref, f"train {what}"):
        log_stage(f"train {what}", ref, reused=True)
        return ref
    started = time.monotonic()

    work = scratch_dir(ref)
    data = os.path.join(work, "data")
    os.makedirs(data, exist_ok=True)
    sources = pseudo_sources(store, pseudo or [], reliable_only, relabeled)
    load_from = None
    if init is not None:
        load_from = fetch_checkpoint(store, init, "last", os.path.join(data, "init.pth"))
    schedule = ""
    lab = kind.local_set(store, labeled, data, "labeled")
    val_src = kind.local_set(store, val, data, "val") if val is not None else None
    pseudo_src, num_pseudo, held = None, 0, None
    if pseudo:
        assert thresholds is not None  # checked above
        chosen = Thresholds.from_json(store.read_json(thresholds, "thresholds.json"))
        pseudo_src, num_pseudo, held = kind.student_data(store, sources, lab, data, chosen)
        held = dict(held, images=num_pseudo, thresholds=chosen.to_json())
    num_labeled = count_images(lab)
    if iters is None:
        assert teacher_iters is not None  # checked above
        iters = epoch_matched_iters(teacher_iters, num_labeled, num_pseudo, k)
        schedule = (
            f", the teacher's epochs: {teacher_iters} x ({oversample_times(num_labeled, num_pseudo)} x {num_labeled}"
            f" + {num_pseudo}) / {teacher_set_size(num_labeled)} images"
        )
    common = dict(work_dir=work, iters=iters, k=k, seed=seed, aug=aug, pretrained=pretrained, load_from=load_from)
    train_cfg = kind.train_config(
        cfg,
        labeled=lab,
        val=val_src,
        pseudo=pseudo_src,
        method=method,
        alpha=alpha,
        num_pseudo=num_pseudo,
        num_labeled=num_labeled,
        zoph_batch=zoph_batch,
        normalize_loss=normalize_loss,
        strong_aug=strong_aug,
        **common,
    )
    interval = iters // k
    ckpts = [os.path.join(work, f"iter_{j * interval}.pth") for j in range(1, k + 1)]  # what the schedule writes
    last = resume_point(work, f"train {what}", ckpts)
    resumed = ""
    if last is not None:
        # A previous attempt was stopped: continue from its last complete checkpoint, not from scratch.
        train_cfg.resume, train_cfg.load_from = True, None
        at = interval * (ckpts.index(last) + 1)  # resume_point returns one of ckpts
        stage_logger().warning(
            "train %s: resumed from the last checkpoint of a stopped attempt (iter: %s, %s)", what, at, last
        )
        resumed = f", resumed at iteration {at}: {iters - at} trained in this attempt"
    train_cfg.experiment_name = f"{role}-{ref.key[:8]}-{os.getpid()}"
    train_cfg.visualizer.name = f"vis-{train_cfg.experiment_name}"
    train_cfg.custom_hooks = [dict(type="ProgressHook", what=f"train {what}")]
    config_file = os.path.join(work, "config.py")
    train_cfg.dump(config_file)
    with scratch_guard(work, f"train {what}"):
        if n_gpus > 1:  # torchrun + mmengine's launcher: DDP (NCCL and SyncBN on CUDA, gloo on CPU)
            config_file = train_distributed(train_cfg, work, n_gpus, f"train {what}")
        else:
            with quiet_openmmlab(work, train_cfg.experiment_name, f"train {what}"):
                runner = Runner.from_cfg(train_cfg)
                runner.train()
                if val_src is not None and not validated_at_end(_scalars(work)):
                    # stopped during its last validation, and resumed at the end: nothing validated it
                    stage_logger().warning(
                        "train %s: the validation at the end of the schedule did not finish before the stop: "
                        "validating now",
                        what,
                    )
                    runner.val()

    check_checkpoints(work, ckpts, f"train {what}")
    best = best_checkpoint(work, f"train {what}")
    history = _scalars(work)
    meta = {
        "role": role,
        "params": params,
        "iters": iters,
        "model_config": model_config,
        "checkpoints": k,
        "last": f"ckpt-{k}.pth",
        "best": os.path.basename(best) if best else None,
        "processes": n_gpus,
        "final_val": history[-1] if history and kind.val_metric in history[-1] else None,
    }
    if held is not None:
        meta["pseudo_labels"] = held  # what the student trained on: images, labels kept per class, thresholds
    with store.writer(ref, meta=meta) as w:
        for j, path in enumerate(ckpts, start=1):
            w.put_file(f"ckpt-{j}.pth", path)
        if best:
            w.put_file("best.pth", best)
        w.write_json("history.json", history)
        w.put_file(
            "config.py", config_file
        )  # what it ran with (the DDP config for N processes): `selftrain config show`
    log_stage(
        f"train {what}",
        ref,
        reused=False,
        started=started,
        detail=f"{iters} iterations{schedule}{resumed}" + (f", {num_pseudo} pseudo-labeled images" if pseudo else ""),
    )
    return ref


def _scalars(work: str) -> list[dict]:
    """The Runner's logged scalars (loss, lr, validation metrics) of the whole training: every
    attempt's ``<timestamp>/vis_data/scalars.json`` in the scratch folder ``work``, oldest
    first (by when each was last written: the folders' local-time names can go back with the
    clock), merged by :func:`merge_attempts`. A file cut short by a kill ends at its last whole line."""
    files = sorted(glob.glob(os.path.join(work, "*", "vis_data", "scalars.json")), key=os.path.getmtime)
    attempts = []
    for path in files:
        rows = []
        with open(path) as f:
            for line in f:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut short by a kill; or blank
                    continue
        attempts.append(rows)
    return merge_attempts(attempts)


def validated_at_end(history: list[dict]) -> bool:
    """Whether a training's merged scalar rows (:func:`_scalars`) end with a validation row: mmengine
    logs a training row with its ``iter`` and a validation row without one, metrics or not (a
    detector with no box yet has none). A training stopped during its last validation and
    resumed at the end of the schedule ends with its last training row instead."""
    return bool(history) and "iter" not in history[-1]


def merge_attempts(attempts: list[list[dict]]) -> list[dict]:
    """One training's scalar rows from its attempts' rows, oldest attempt first. mmengine logs a
    training row with its ``iter`` and a validation row without one, in order. An attempt resumed
    from iteration R logs from R + 1 on, and one that starts from scratch from 1: each attempt's
    rows replace the rows of the attempts before it from its first logged iteration on (rows up
    to that point, validation rows included, are kept). An attempt that logged no training row
    (resumed at the end of the schedule) adds its rows after the others. Within one file, an
    iteration that does not follow the one before starts another attempt: a retry in the same
    process appends to the first attempt's file (mmengine hands it the same visualizer)."""
    segments: list[list[dict]] = []
    for rows in attempts:
        segments.append([])
        last = None
        for row in rows:
            if "iter" in row:
                if last is not None and row["iter"] <= last:
                    segments.append([])
                last = row["iter"]
            segments[-1].append(row)
    merged: list[dict] = []
    for rows in segments:
        first = next((r["iter"] for r in rows if "iter" in r), None)
        if first is not None:
            cut = next((i for i, r in enumerate(merged) if r.get("iter", -1) >= first), len(merged))
            merged = merged[:cut]
        merged += rows
    return merged
