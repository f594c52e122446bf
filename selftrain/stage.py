"""What every stage task shares: the store for a root URL and a local scratch folder."""

from __future__ import annotations

import functools
import logging
import os

from storage.store import ArtifactRef, ArtifactStore


@functools.lru_cache(maxsize=8)
def get_store(url: str) -> ArtifactStore:
    """One store object per root URL and process. S3 credentials and endpoint come from the
    environment (AWS_* variables, SELFTRAIN_S3_ENDPOINT_URL), never from flow parameters."""
    return ArtifactStore(url)


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


def scratch_root() -> str:
    return os.environ.get("SELFTRAIN_WORK_DIR") or os.path.join(
        os.environ.get("SELFTRAIN_CACHE") or os.path.join(
            os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "selftrain"), "work")


def scratch_dir(ref: ArtifactRef) -> str:
    """A local folder for one stage output, stable across re-runs so training can resume."""
    path = os.path.join(scratch_root(), ref.dataset, ref.stage, ref.key)
    os.makedirs(path, exist_ok=True)
    return path


def read_pseudo_boxes(store: ArtifactStore, shards: list[ArtifactRef]) -> tuple[list[dict], list[dict]]:
    """All pseudo-box rows and per-image statistics rows of the given pseudo-label shards."""
    from storage.schemas import DET_IMAGE_STATS, PSEUDO_BOXES, read_parquet

    boxes, stats = [], []
    for ref in shards:
        boxes += read_parquet(store.read(ref, "boxes.parquet"), PSEUDO_BOXES).to_pylist()
        stats += read_parquet(store.read(ref, "stats.parquet"), DET_IMAGE_STATS).to_pylist()
    return boxes, stats


def is_segmentation(labelled: ArtifactRef) -> bool:
    """Whether a registered labelled set is a segmentation set (tasks/register_seg_dataset.py)."""
    return labelled.stage == "seg_dataset"


def read_pseudo_masks(store: ArtifactStore, shards: list[ArtifactRef]):
    """(image_id, mask) of every pseudo mask of the given shards, one at a time, and the
    per-image statistics rows."""
    from storage.masks import iter_mask_shard
    from storage.schemas import SEG_IMAGE_STATS, read_parquet

    stats = []
    for ref in shards:
        stats += read_parquet(store.read(ref, "stats.parquet"), SEG_IMAGE_STATS).to_pylist()

    def masks():
        for ref in shards:
            with store.open(ref, "masks.parquet") as f:
                yield from iter_mask_shard(f)

    return masks(), stats
