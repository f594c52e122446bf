"""Every environment variable the project reads, in one settings object.

It lives in the lowest layer (storage) so that every layer above can read it. A value is read
when ``settings()`` is called, not at import, so that a worker's environment (a Prefect work
pool's job variables, a Dask worker's) is the one that counts. A malformed value raises
SettingsError naming the variable and what it accepts.

=============================  ==========================================================
SELFTRAIN_DATA                 where the coco / voc / cityscapes deployments find their data
                               (default: <repository>/data)
SELFTRAIN_STORE                the deployments' artifact store (default: <repository>/runs/store)
SELFTRAIN_CACHE                offline weights, dataset sources, scratch folders
                               (default: ${XDG_CACHE_HOME:-~/.cache}/selftrain)
SELFTRAIN_WORK_DIR             scratch folders of trainings and inference (default: <cache>/work)
SELFTRAIN_SHARD_CONCURRENCY    pseudo-label shards run at once in one flow (default 1)
SELFTRAIN_DASK_ADDRESS         a Dask scheduler (tcp://host:8786): shards run on its workers
SELFTRAIN_GPUS                 GPUs a training uses, DDP when > 1 (default 1); without CUDA,
                               that many CPU processes (gloo)
SELFTRAIN_S3_ENDPOINT_URL      an S3-compatible endpoint (MinIO, SeaweedFS, ...); else
AWS_ENDPOINT_URL               the standard variable; else AWS itself
SELFTRAIN_OUTAGE_RETRIES       times a task is retried after a storage outage (default 4,
                               0..20; read when a process imports the tasks)
SELFTRAIN_OUTAGE_RETRY_DELAY_S the first retry's delay in seconds, doubled for each later
                               retry up to 60 s (default 5: 5, 10, 20, 40 s, i.e. an outage
                               of about 75 s is ridden out)
=============================  ==========================================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class SettingsError(ValueError):
    """An environment variable holds a value the project cannot use."""


def _positive_int(environ: Mapping[str, str], name: str, default: int) -> int:
    return _int_in(environ, name, default, 1, 10**9)


def _int_in(environ: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    value = environ.get(name, "").strip()
    if not value:
        return default
    try:
        n = int(value)
    except ValueError as exc:
        raise SettingsError(f"{name} must be a whole number, got {value!r}") from exc
    if not low <= n <= high:
        bound = f"at least {low}" if high >= 10**9 else f"between {low} and {high}"
        raise SettingsError(f"{name} must be {bound}, got {n}")
    return n


@dataclass(frozen=True)
class Settings:
    data: str
    store: str
    cache: str
    work_dir: str
    shard_concurrency: int
    dask_address: str | None
    gpus: int
    s3_endpoint_url: str | None
    outage_retries: int = 4
    outage_retry_delay_s: int = 5

    def outage_retry_delays(self) -> list[int]:
        """Seconds before each retry after an outage: the first delay, doubled, at most 60."""
        return [min(60, self.outage_retry_delay_s * 2**i) for i in range(self.outage_retries)]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        cache = env.get("SELFTRAIN_CACHE") or os.path.join(
            env.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "selftrain"
        )
        return cls(
            data=env.get("SELFTRAIN_DATA") or os.path.join(REPO, "data"),
            store=env.get("SELFTRAIN_STORE") or os.path.join(REPO, "runs", "store"),
            cache=cache,
            work_dir=env.get("SELFTRAIN_WORK_DIR") or os.path.join(cache, "work"),
            shard_concurrency=_positive_int(env, "SELFTRAIN_SHARD_CONCURRENCY", 1),
            dask_address=env.get("SELFTRAIN_DASK_ADDRESS") or None,
            gpus=_positive_int(env, "SELFTRAIN_GPUS", 1),
            s3_endpoint_url=env.get("SELFTRAIN_S3_ENDPOINT_URL") or env.get("AWS_ENDPOINT_URL") or None,
            outage_retries=_int_in(env, "SELFTRAIN_OUTAGE_RETRIES", 4, 0, 20),
            outage_retry_delay_s=_int_in(env, "SELFTRAIN_OUTAGE_RETRY_DELAY_S", 5, 1, 600),
        )


def settings() -> Settings:
    """The settings of this process's environment, read now."""
    return Settings.from_env()
