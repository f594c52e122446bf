"""What every stage task shares: the store for a root URL and a local scratch folder."""

from __future__ import annotations

import contextlib
import contextvars
import functools
import glob
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

from pydantic import BaseModel

from selftrain.kinds import KINDS
from storage.listing import ListedFile
from storage.store import ArtifactRef, ArtifactStore

if TYPE_CHECKING:  # the OpenMMLab config builder is imported where it is used (it loads mmengine)
    from prefect import Task

    from selftrain.mm.configs import CocoSource, SegSource


@functools.lru_cache(maxsize=8)
def get_store(url: str) -> ArtifactStore:
    """One store object per root URL and process. S3 credentials and endpoint come from the
    environment (AWS_* variables, SELFTRAIN_S3_ENDPOINT_URL), never from flow parameters."""
    return ArtifactStore(url)


# The names under which stage keys record their labeled-set and re-labeled inputs. They keep
# the spelling of the first stores ("labelled") so that stores made before the project wrote
# "labeled" everywhere are still reused: renaming them would change every stage key.
LABELED_INPUT, RELABELED_INPUT = "labelled", "relabelled"

#: What each kind of reference a task takes may point to: the store stages that make it.
#: Tasks check their arguments with :func:`expect`, so that two references swapped by mistake
#: (a shard for a model, pseudo labels for a ranking) fail at once, naming the argument,
#: instead of computing something else. tests/unit/test_references.py keeps these names equal
#: to the tasks' own STAGE constants.
REFERENCE_STAGES: dict[str, tuple[str, ...]] = {
    "registered set": tuple(k.dataset_stage for k in KINDS.values()),
    "unlabeled listing": ("unlabeled",),
    "shard": ("shard",),
    "model": ("train",),
    "pseudo labels": tuple(k.pseudo_stage for k in KINDS.values()),
    "stability scores": ("stability",),
    "ranking": ("ranking",),
    "thresholds": ("thresholds",),
    "evaluation": ("eval",),
}


class WrongReference(TypeError):
    """A task was given a reference to another kind of artifact than the argument takes."""


def expect(task: str, argument: str, value: object, kind: str) -> None:
    """Check that ``value`` (an ArtifactRef, a list of them, or None) points to a ``kind`` of
    artifact (a key of REFERENCE_STAGES). Raises WrongReference naming the task, the argument,
    what it takes and what it got."""
    stages = REFERENCE_STAGES[kind]
    for ref in value if isinstance(value, (list, tuple)) else [value]:
        if ref is None:
            continue
        if not isinstance(ref, ArtifactRef) or ref.stage not in stages:
            got = ref.uri if isinstance(ref, ArtifactRef) else repr(ref)
            article = "an" if kind[0] in "aeiou" else "a"
            raise WrongReference(f"{task}: {argument} must be {article} {kind} (stage {'/'.join(stages)}), got {got}")


# The unlabeled listing's stage: list_unlabeled writes it, select_images writes subsets of it.
UNLABELED_STAGE, UNLABELED_VERSION = "unlabeled", 1


def is_storage_outage(exc: BaseException) -> bool:
    """True when ``exc``, or an error it was raised from, is the storage being unreachable
    (StorageUnavailable, or an image read that failed for that reason after its own retries):
    what a task retry rides out. Access denied, missing or corrupt objects and errors of
    users' data are not outages and fail at once."""
    from selftrain.mm.transforms import infrastructure_kind

    return infrastructure_kind(exc) == "storage unavailable"


def retry_on_outage(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect's ``retry_condition_fn`` of every task: retry only a storage outage."""
    exc = getattr(state, "data", None)
    if not isinstance(exc, BaseException):
        try:
            state.result()
        except BaseException as raised:  # noqa: BLE001 - the task's own failure, inspected
            exc = raised
    return isinstance(exc, BaseException) and is_storage_outage(exc)


def task_options() -> dict[str, Any]:
    """What every task's ``@task`` shares: no Prefect result caching (the store is the cache)
    and retries after a storage outage - SELFTRAIN_OUTAGE_RETRIES times with a doubling delay
    (storage/settings.py; default 4: 5, 10, 20, 40 s). Read when the task module is imported,
    i.e. in the worker's environment. A retried task finds what it had committed and reuses it
    (a training resumes from its last complete checkpoint in the scratch folder)."""
    from prefect.cache_policies import NO_CACHE

    from storage.settings import settings

    s = settings()
    return dict(
        cache_policy=NO_CACHE,
        retries=s.outage_retries,
        retry_delay_seconds=s.outage_retry_delays() or 0,
        retry_condition_fn=retry_on_outage,
    )


P = ParamSpec("P")
R = TypeVar("R")
# the leases the running stage task holds, released when it returns or raises
_HELD: contextvars.ContextVar[contextlib.ExitStack | None] = contextvars.ContextVar("selftrain_leases", default=None)


def stage_task(name: str, **options: Any) -> Callable[[Callable[P, R]], Task[P, R]]:
    """``@task`` for a stage: Prefect's task with :func:`task_options` (outage retries, no
    result cache) and ``options``; the leases the task takes (:func:`done_or_claimed`) are
    released when it returns or raises."""
    from prefect import task

    def decorate(fn: Callable[P, R]) -> Task[P, R]:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            # Dask ships this function to its workers by value (cloudpickle): it names the
            # context variables through their modules, which travel by reference
            import selftrain.stage as stage
            import storage.store as store

            with contextlib.ExitStack() as stack:
                token, creator = stage._HELD.set(stack), store.CREATED_BY.set(stage.current_flow_run_id())
                try:
                    return fn(*args, **kwargs)
                finally:
                    store.CREATED_BY.reset(creator)
                    stage._HELD.reset(token)

        return cast("Task[P, R]", task(name=name, **{**task_options(), **options})(run))

    return decorate


def done_or_claimed(store: ArtifactStore, ref: ArtifactRef, what: str) -> bool:
    """True when ``ref`` is complete - reuse it; possibly after waiting while another run
    computed it. False when this task now holds ``ref``'s lease (storage/leases.py) and must
    compute it: no other run computes it or uses its scratch folder until this task returns
    or raises (then the lease is released) or its process dies (then the lease lapses).
    Raises RuntimeError outside a :func:`stage_task`, where nothing would release the lease."""
    from storage.leases import claim

    if store.has(ref):
        return True
    stack = _HELD.get()
    if stack is None:
        raise RuntimeError(f"{what}: done_or_claimed is called outside a stage task (selftrain.stage.stage_task)")

    def waiting(holder) -> None:
        stage_logger().info("%s: waiting for %s, which is computing %s", what, holder.describe(), ref.uri)

    lease = claim(store, ref, owner=run_name(), on_wait=waiting)
    if lease is None:
        return True
    stack.enter_context(lease)
    return False


def current_flow_run_id() -> str | None:
    """The id of the Prefect flow run this code runs in (a task's, on any worker), else None."""
    try:
        from prefect.context import FlowRunContext, TaskRunContext

        task = TaskRunContext.get()
        if task is not None and task.task_run.flow_run_id is not None:
            return str(task.task_run.flow_run_id)
        flow = FlowRunContext.get()
        return str(flow.flow_run.id) if flow is not None and flow.flow_run is not None else None
    except Exception:  # noqa: BLE001 - outside Prefect
        return None


def run_name() -> str:
    """'flow run <name> / <task run name>' inside Prefect, else 'pid <n>'."""
    try:
        from prefect.context import FlowRunContext, TaskRunContext

        flow, task = FlowRunContext.get(), TaskRunContext.get()
        parts = [f"flow run {flow.flow_run.name!r}" if flow and flow.flow_run else ""]
        parts.append(f"task {task.task_run.name!r}" if task else "")
        name = " / ".join(p for p in parts if p)
        if name:
            return name
    except Exception:  # noqa: BLE001 - a name for humans only
        pass
    return f"pid {os.getpid()}"


def stage_logger() -> logging.Logger | logging.LoggerAdapter:
    """Prefect's run logger inside a flow or task run (the UI shows its lines), else the
    module's standard logger (tests, scripts)."""
    try:
        from prefect import get_run_logger
        from prefect.exceptions import MissingContextError

        try:
            return get_run_logger()
        except MissingContextError:
            pass
    except ImportError:  # pragma: no cover - prefect is part of the stack
        pass
    return logging.getLogger("selftrain")


def duration(seconds: float) -> str:
    """'1h 02m', '4m 05s' or '12s'."""
    s = int(round(max(0.0, seconds)))
    if s >= 3600:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s}s"


def log_stage(name: str, ref: ArtifactRef, reused: bool, started: float | None = None, detail: str = "") -> None:
    """The one line a stage logs when it ends: reused from the store or computed (and how
    long it took), what it made (``detail``) and where the result is."""
    import time

    how = "reused" if reused else "computed" + (f" in {duration(time.monotonic() - started)}" if started else "")
    stage_logger().info("%s: %s%s -> %s", name, how, f" ({detail})" if detail else "", ref.uri)


def scratch_root() -> str:
    """SELFTRAIN_WORK_DIR, else <cache>/work (storage/settings.py)."""
    from storage.settings import settings

    return settings().work_dir


def scratch_dir(ref: ArtifactRef) -> str:
    """A local folder for one stage output, stable across re-runs so training can resume."""
    path = os.path.join(scratch_root(), ref.dataset, ref.stage, ref.key)
    os.makedirs(path, exist_ok=True)
    return path


class ScratchError(RuntimeError):
    """The local scratch folder of a stage failed under it: the disk is full, or the folder was
    deleted while the stage ran. Nothing of the stage was stored; the message names the folder."""


_DISK_FULL = ("no space left on device", "file write failed", "disk quota exceeded")


@contextlib.contextmanager
def scratch_guard(work: str, what: str):
    """Run a stage's local work in its scratch folder ``work``, turning a full disk or a folder
    deleted meanwhile into a ScratchError that names the folder and what to do; other errors
    pass unchanged. The stage's output is stored only after this work, so nothing half-written
    counts, and a re-run recovers (a training resumes from its last complete checkpoint when one is left)."""
    import errno

    try:
        yield
    except Exception as exc:  # noqa: BLE001 - translated when it is the scratch folder's failure
        text = str(exc).lower()
        full = getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or any(t in text for t in _DISK_FULL)
        gone = not os.path.isdir(work)
        if not (full or gone):
            raise
        why = "the disk is full" if full else "the folder was deleted while the stage ran"
        raise ScratchError(
            f"{what}: scratch folder {work}: {why} ({type(exc).__name__}: {' '.join(str(exc).split())[:300]}). "
            "Nothing of this stage was stored. Free space there or set SELFTRAIN_WORK_DIR to a larger "
            "disk, then run again."
        ) from exc


def checkpoint_complete(path: str) -> bool:
    """Whether ``path`` is a complete checkpoint: torch's zip archive (what ``torch.save``
    writes) with its central directory and every member's CRC-32 intact. A file cut short (the
    process killed, or the machine lost, while mmengine wrote it in place) or changed afterwards
    is not; neither is a missing file."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except Exception:  # noqa: BLE001 - any damage (a bad header raises zlib.error, NotImplementedError, ...)
        return False


_ITER = re.compile(r"iter_(\d+)\.pth$")


def _iteration(path: str) -> int:
    found = _ITER.search(path)
    return int(found.group(1)) if found else -1


def _remove(path: str) -> None:
    """Remove a file, or a folder where a file was expected; nothing when it is gone."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def _drop_incomplete(path: str, what: str) -> None:
    stage_logger().warning("%s: %s is incomplete (cut short or changed after it was written); deleted", what, path)
    _remove(path)


def _point_last_checkpoint(work: str, checkpoint: str | None) -> None:
    """Rewrite ``work/last_checkpoint`` (mmengine's resume pointer) to name ``checkpoint``, or
    remove it for None; replaced in one step, so a kill leaves the old pointer or the new."""
    pointer = os.path.join(work, "last_checkpoint")
    if checkpoint is None:
        _remove(pointer)
        return
    if os.path.isdir(pointer) and not os.path.islink(pointer):
        _remove(pointer)
    tmp = f"{pointer}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(checkpoint)
    os.replace(tmp, pointer)


def _read_pointer(pointer: str) -> tuple[str, str] | None:
    """What mmengine's ``last_checkpoint`` says - (its text, how a message quotes it) - or None
    when there is none. A machine lost while it was written can leave anything: bytes that are
    not clean UTF-8 text (NULs included) are quoted as bytes, and a folder in its place as
    unreadable, so that a damaged pointer is reported, not raised."""
    try:
        with open(pointer, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    except OSError as exc:  # a folder in its place, unreadable
        return "", f"nothing readable ({type(exc).__name__})"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    if "\x00" in text or (data and not text):
        return "", f"{len(data)} bytes {data[:40]!r}"
    return text.strip(), repr(text.strip())


def resume_point(work: str, what: str, scheduled: list[str]) -> str | None:
    """The checkpoint a stopped training resumes from in its scratch folder ``work``, given
    its ``scheduled`` checkpoints (the K ``iter_N.pth`` paths the schedule writes, N ascending).

    A checkpoint is written in place and only then named in mmengine's ``last_checkpoint``, so
    a kill or a lost machine while one is written leaves it cut short, and a lost machine can
    leave the pointer itself empty or garbled; resuming from a checkpoint cut short fails in
    torch's zip reader. Only the scheduled checkpoints before the first one that is missing or
    incomplete (:func:`checkpoint_complete`; an incomplete one is deleted, each named in a
    warning) can be resumed from, since every scheduled checkpoint is stored after the
    training. Of those, the one the pointer names (looked up by name inside ``work``, so a moved
    folder still resumes), else the newest before it; when the pointer names no iteration
    checkpoint (empty, garbled), the one written last (by modification time: a training that
    started again from an earlier point rewrites its later checkpoints). ``last_checkpoint`` is
    rewritten to name the one returned, with a warning when it differs from what the pointer
    said. None (and no pointer) when there is no pointer - the training starts from scratch, as
    mmengine does - or nothing complete to resume from (a warning says why)."""
    pointer = os.path.join(work, "last_checkpoint")
    read = _read_pointer(pointer)
    if read is None:
        return None
    named, shown = read
    last = _iteration(named)
    usable: list[str] = []
    gap = None  # the first scheduled checkpoint, up to the named one, that is missing or incomplete
    for path in scheduled:
        if last >= 0 and _iteration(path) > last:
            break  # after the pointer: the resumed training writes it again
        if not os.path.exists(path):
            gap = path
            break
        if not checkpoint_complete(path):
            _drop_incomplete(path, what)
            gap = path
            break
        usable.append(path)
    why = f"{gap} is missing or incomplete" if gap else "it names no checkpoint of the schedule"
    if not usable:
        stage_logger().warning(
            "%s: last_checkpoint names %s, but %s and no complete checkpoint comes before it: training from scratch",
            what,
            shown,
            why,
        )
        _point_last_checkpoint(work, None)
        return None
    if last >= 0:
        chosen = usable[-1]
        if _iteration(chosen) != last:
            stage_logger().warning(
                "%s: last_checkpoint names %s, but %s: resuming from %s, the newest complete checkpoint before it",
                what,
                shown,
                why,
                chosen,
            )
    else:
        chosen = max(usable, key=os.path.getmtime)
        stage_logger().warning(
            "%s: last_checkpoint names %s, no checkpoint: resuming from %s, the complete checkpoint written last",
            what,
            shown,
            chosen,
        )
    _point_last_checkpoint(work, chosen)
    return chosen


def best_checkpoint(work: str, what: str) -> str | None:
    """The best checkpoint by validation in the scratch folder ``work``: mmengine's newest
    ``best_*_iter_N.pth`` (by N, not by name). A killed attempt may leave one cut short; it is
    deleted and the same iteration's ``iter_N.pth`` (the same weights: mmengine saves it before
    validating at N) stands in, or None when that is incomplete too."""
    bests = sorted(glob.glob(os.path.join(work, "best_*.pth")), key=_iteration)
    if not bests:
        return None
    if checkpoint_complete(bests[-1]):
        return bests[-1]
    _drop_incomplete(bests[-1], what)
    same = os.path.join(work, f"iter_{_iteration(bests[-1])}.pth")
    if _iteration(bests[-1]) >= 0 and checkpoint_complete(same):
        stage_logger().warning("%s: %s stands in for the best checkpoint (the same iteration)", what, same)
        return same
    return None


def check_checkpoints(work: str, checkpoints: list[str], what: str) -> None:
    """After a training: every one of the K ``checkpoints`` (paths in the scratch folder
    ``work``) must be there and complete (:func:`checkpoint_complete`). When some are gone
    (deleted from the scratch folder meanwhile) or incomplete (deleted here), the training
    cannot be stored: ``last_checkpoint`` is pointed at the newest complete checkpoint before the
    first gap (removed when there is none), so that the re-run trains again from there instead
    of resuming at the end of the schedule into the same gap, and a ScratchError names the
    folder and the files."""
    missing = [os.path.basename(c) for c in checkpoints if not os.path.exists(c)]
    broken = [os.path.basename(c) for c in checkpoints if os.path.exists(c) and not checkpoint_complete(c)]
    if not missing and not broken:
        return
    for name in broken:
        _drop_incomplete(os.path.join(work, name), what)
    gap = min(_iteration(name) for name in missing + broken)
    before = [c for c in checkpoints if _iteration(c) < gap]
    _point_last_checkpoint(work, before[-1] if before else None)
    problems = ([f"{missing} are missing (deleted from the folder while it ran?)"] if missing else []) + (
        [f"{broken} are incomplete (cut short or changed after they were written)"] if broken else []
    )
    raise ScratchError(
        f"{what}: scratch folder {work}: checkpoints {' and '.join(problems)} after the training. Nothing of this "
        "stage was stored; a re-run trains again from "
        + (f"{os.path.basename(before[-1])}." if before else "the start.")
    )


def read_pseudo_boxes(store: ArtifactStore, shards: list[ArtifactRef]) -> tuple[list[dict], list[dict]]:
    """All pseudo-box rows and per-image statistics rows of the given pseudo-label shards."""
    from storage.schemas import DET_IMAGE_STATS, PSEUDO_BOXES, read_parquet

    boxes, stats = [], []
    for ref in shards:
        boxes += read_parquet(store.read(ref, "boxes.parquet"), PSEUDO_BOXES).to_pylist()
        stats += read_parquet(store.read(ref, "stats.parquet"), DET_IMAGE_STATS).to_pylist()
    return boxes, stats


def read_pseudo_masks(store: ArtifactStore, shards: list[ArtifactRef], confidence: bool = False):
    """(image_id, mask) of every pseudo mask of the given shards - with ``confidence``
    (image_id, mask, 8-bit confidence or None for shards stored without it) - one at a time,
    and the per-image statistics rows."""
    from storage.masks import iter_mask_shard
    from storage.schemas import SEG_IMAGE_STATS, read_parquet

    stats = []
    for ref in shards:
        stats += read_parquet(store.read(ref, "stats.parquet"), SEG_IMAGE_STATS).to_pylist()

    def masks():
        for ref in shards:
            with store.open(ref, "masks.parquet") as f:
                yield from iter_mask_shard(f, confidence)

    return masks(), stats


class PseudoMaskReader:
    """Random access to the pseudo masks of some shards, one mask in memory at a time.

    Built from each shard's mask index (``index.parquet``: image id -> row group), so that
    a report or an export of a pool of any size reads only the masks it asks for.
    ``reader[image_id]`` is the (H, W) uint8 label map (255: ignored), with ``quantised``
    thresholds (selftrain.pseudo_labels.Thresholds.quantised) applied to its stored
    confidence; KeyError names an image that none of the shards labeled."""

    def __init__(self, store: ArtifactStore, shards: list[ArtifactRef], quantised: Any = None) -> None:
        from storage.masks import read_mask_index

        self._store = store
        self._quantised = quantised
        self.stored_thresholded = 0  # masks read that had no confidence to threshold (version 1 shards)
        self._open: tuple[ArtifactRef, contextlib.ExitStack, Any] | None = None
        self._where: dict[str, tuple[ArtifactRef, int]] = {}
        for ref in shards:
            for row in read_mask_index(store.read(ref, "index.parquet")).to_pylist():
                self._where[row["image_id"]] = (ref, int(row["row_group"]))

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._where

    def __len__(self) -> int:
        return len(self._where)

    def in_shard_order(self, image_ids) -> list[str]:
        """``image_ids`` that have a mask, ordered by shard and row group: read in this order,
        each shard file is opened once."""
        have = [i for i in image_ids if i in self._where]
        return sorted(have, key=lambda i: (self._where[i][0].key, self._where[i][1]))

    def __getitem__(self, image_id: str):
        from storage.masks import read_mask

        if image_id not in self._where:
            raise KeyError(f"no pseudo mask for image {image_id!r} in these shards")
        ref, row_group = self._where[image_id]
        if self._open is None or self._open[0] != ref:  # keep one shard file open, not one per mask
            self.close()
            stack = contextlib.ExitStack()
            self._open = (ref, stack, stack.enter_context(self._store.open(ref, "masks.parquet")))
        if self._quantised is None:
            return read_mask(self._open[2], row_group)
        from selftrain.pseudo_labels import apply_confidence

        label, confidence = read_mask(self._open[2], row_group, confidence=True)
        self.stored_thresholded += confidence is None
        return apply_confidence(label, confidence, self._quantised)

    def close(self) -> None:
        if self._open is not None:
            self._open[1].close()
            self._open = None


class ModelNotFound(LookupError):
    """A model reference names no completed model in the store."""


def find_model(
    store: ArtifactStore, dataset: str, reference: str, model_config: str | None = None, role: str = "teacher"
) -> ArtifactRef:
    """The trained model a reference names, in ``store`` under ``dataset``.

    ``reference``: 'latest' (the most recently completed model of ``role`` - and of
    ``model_config`` when given - by its manifest's creation time), 'train/<key>', or the
    model's full URI '<store root>/<dataset>/train/<key>'. Raises ModelNotFound naming the
    store, the dataset and what was looked for."""
    if reference == "latest":
        found = []
        for ref in store.list(dataset, "train"):
            manifest = store.manifest(ref)
            if manifest.meta.get("role") == role and (
                model_config is None or manifest.meta.get("model_config") == model_config
            ):
                found.append((manifest.created_at, ref))
        if not found:
            what = f"{role} of dataset {dataset!r}" + (f" with config {model_config!r}" if model_config else "")
            raise ModelNotFound(
                f"no completed {what} in the store {store.url}: run the self-training flow "
                "once (it trains the teacher), or name a model as 'train/<key>'"
            )
        return max(found, key=lambda f: f[0])[1]
    stage_key = reference.rstrip("/").split("/")[-2:]
    if len(stage_key) != 2 or stage_key[0] != "train":
        raise ModelNotFound(
            f"model reference {reference!r}: expected 'latest', 'train/<key>' or '<store>/<dataset>/train/<key>'"
        )
    try:
        ref = store.ref(dataset, "train", stage_key[1])
    except ValueError as exc:
        raise ModelNotFound(f"model reference {reference!r}: {exc}") from exc
    if not store.has(ref):
        raise ModelNotFound(
            f"model {reference!r} is not a completed model of dataset {dataset!r} in the store {store.url}"
        )
    if model_config is not None and store.manifest(ref).meta.get("model_config") not in (None, model_config):
        raise ModelNotFound(
            f"model {reference!r} was trained with config "
            f"{store.manifest(ref).meta.get('model_config')!r}, not {model_config!r}"
        )
    return ref


def fetch_checkpoint(store: ArtifactStore, model: ArtifactRef, which: str, path: str) -> str:
    """A trained model's checkpoint as a local file: which = 'last', 'best' or 'ckpt-<j>'."""
    meta = store.manifest(model).meta
    name = meta["last"] if which == "last" else "best.pth" if which == "best" else f"{which}.pth"
    if which == "best" and not meta.get("best"):
        name = meta["last"]  # trained without a validation set
    return store.get_file(model, name, path)


def local_coco(store: ArtifactStore, ref: ArtifactRef, folder: str, name: str) -> CocoSource:
    """A registered COCO set as a local annotation file + its image root."""
    from selftrain.mm.configs import CocoSource

    meta = store.manifest(ref).meta
    path = store.get_file(ref, "coco.json", os.path.join(folder, f"{name}.json"))
    return CocoSource(ann_file=path, image_root=meta["image_root"], classes=tuple(meta["classes"]))


def local_seg(store: ArtifactStore, ref: ArtifactRef, folder: str, name: str) -> SegSource:
    """A registered segmentation set as a local pair list."""
    from selftrain.mm.configs import SegSource

    path = store.get_file(ref, "pairs.json", os.path.join(folder, f"{name}.json"))
    return SegSource(pairs_file=path, classes=tuple(store.manifest(ref).meta["classes"]))


PSEUDO_STAGES = tuple(k.pseudo_stage for k in KINDS.values())


class ShardPlan(BaseModel):
    """The shards to label: reused ones first (already labeled by the labeler), then new ones."""

    shards: list[ArtifactRef]
    images: int
    new_images: int
    reused_shards: int


def listed_images(store: ArtifactStore, refs: list[ArtifactRef], key: str, marks: list[str]) -> Iterator[ListedFile]:
    """Every image of the listings or shards ``refs`` (their images.parquet) as
    ListedFile(rel=its ``key`` column - 'image_id' or 'image_uri' -, uri=the ref's mark from
    ``marks``, size), a row group at a time: the input of an on-disk sort
    (storage.listing.sorted_files) that incremental sharding and the watcher merge."""
    import pyarrow.parquet as pq

    for ref, mark in zip(refs, marks, strict=True):
        with store.open(ref, "images.parquet") as f:
            for batch in pq.ParquetFile(f).iter_batches(columns=[key, "size"]):
                cols = batch.to_pydict()
                for name, size in zip(cols[key], cols["size"], strict=True):
                    yield ListedFile(rel=name, uri=mark, size=int(size))
