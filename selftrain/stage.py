"""What every stage task shares: the store for a root URL and a local scratch folder."""

from __future__ import annotations

import functools
import os

from storage.store import ArtifactRef, ArtifactStore


@functools.lru_cache(maxsize=8)
def get_store(url: str) -> ArtifactStore:
    """One store object per root URL and process. S3 credentials and endpoint come from the
    environment (AWS_* variables, SELFTRAIN_S3_ENDPOINT_URL), never from flow parameters."""
    return ArtifactStore(url)


def scratch_root() -> str:
    return os.environ.get("SELFTRAIN_WORK_DIR") or os.path.join(
        os.environ.get("SELFTRAIN_CACHE") or os.path.join(
            os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "selftrain"), "work")


def scratch_dir(ref: ArtifactRef) -> str:
    """A local folder for one stage output, stable across re-runs so training can resume."""
    path = os.path.join(scratch_root(), ref.dataset, ref.stage, ref.key)
    os.makedirs(path, exist_ok=True)
    return path
