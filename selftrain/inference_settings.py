"""The inference batch size and worker count of pseudo labeling and stability scoring, chosen
once per device by measurement and kept in the store (docs/design.md §3.2).

With ``inference_batch_size="auto"`` (the default) the first shard task that runs on a device
measures the settings (selftrain/mm/calibrate.py) on its own first images and stores the
choice as an ``inference_settings`` artifact; every later shard on the same device, and every
later run against the store, reads it. Its key holds what the choice depends on: the device
(GPU name, or CPU model, cores and threads, and torch's version), the model config's digest,
the purpose (pseudo labels with their TTA views, or stability with its K checkpoints) - not
the weights or the images, so a new teacher reuses its predecessor's choice. Two shards that
need it at once do not both measure: one holds the artifact's lease and the other waits for
it (storage/leases.py), so they do not time beside each other (another job on the device
still can). The choice does not
enter any pseudo-label key (the batch size does not change what is computed; see
docs/design.md §3.2 for mmdet's padding of mixed sizes). To measure again, delete the
artifact (``<store>/<dataset>/inference_settings/``) or pass an explicit batch size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TypeVar

from selftrain.stage import run_name, stage_logger
from storage.store import ArtifactRef, ArtifactStore

T = TypeVar("T")

STAGE, VERSION = "inference_settings", 1
FALLBACK_BATCH = 4  # when a shard is too small to measure and nothing is stored yet


@dataclass(frozen=True)
class InferenceSettings:
    """What a shard task runs with: ``batch_size`` (>= 1), ``workers`` (DataLoader worker
    processes, >= 0 or None for the device's default) and how they were chosen:
    ``how`` is 'measured' (now), 'stored' (read from ``ref``), 'given' (the parameter) or
    'fallback' (too few images to measure); ``timings``: the measured rows, when any."""

    batch_size: int
    workers: int | None
    how: str
    ref: ArtifactRef | None = None
    timings: tuple[dict, ...] = ()

    def describe(self) -> str:
        workers = "default" if self.workers is None else str(self.workers)
        where = f" ({self.ref.stage}/{self.ref.key})" if self.ref is not None else ""
        return f"batch {self.batch_size}, {workers} workers, {self.how}{where}"

    def as_meta(self) -> dict:
        """The manifest entry of the shard that ran with these settings."""
        return {
            "batch_size": self.batch_size,
            "workers": self.workers,
            "how": self.how,
            "settings": f"{self.ref.stage}/{self.ref.key}" if self.ref is not None else None,
        }


def settings_ref(store: ArtifactStore, dataset: str, config_digest: str, purpose: dict, device: str) -> ArtifactRef:
    """The key of a device's settings for one model config and ``purpose`` (a JSON-able dict:
    what the timed loop runs, e.g. {"task": "pseudo labels", "scales": [...], "flip": true})."""
    return store.stage_ref(dataset, STAGE, VERSION, config_digest, {}, {"device": device, "purpose": purpose})


def inference_settings(
    store: ArtifactStore,
    dataset: str,
    config_digest: str,
    purpose: dict,
    batch_size: int | str,
    workers: int | None,
    measure: Callable[[], tuple | None],
    num_images: int | None = None,
) -> InferenceSettings:
    """The settings to run a shard with.

    ``batch_size``: an int >= 1 (given: used as it is, with ``workers``) or 'auto'.
    ``measure``: runs selftrain.mm.calibrate.measure_settings on this shard's models and
    images, returning (chosen Timing, [Timing]) or None when the shard is too small. Under
    'auto' the stored choice of this device is read, else measured and stored (the artifact's
    lease makes concurrent callers wait for one measurement); an explicit ``workers`` replaces
    the chosen worker count. ``num_images``: the shard's size, when known: a shard smaller
    than the device's sample (selftrain.mm.calibrate.sample_size) runs the fallback without
    taking the lease. Raises ValueError for any other ``batch_size``, and the store's errors
    when it cannot be read or written."""
    from selftrain.mm.calibrate import device_description, sample_size
    from storage.leases import claim

    if batch_size != "auto":
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"inference batch size must be 'auto' or an int >= 1, not {batch_size!r}")
        return InferenceSettings(batch_size, workers, "given")
    device = device_description()
    ref = settings_ref(store, dataset, config_digest, purpose, device)
    how = "stored"
    if not store.has(ref) and num_images is not None and num_images < sample_size():
        return _fallback(workers)
    if not store.has(ref):

        def waiting(holder) -> None:
            stage_logger().info("inference settings: waiting for %s, which is measuring them", holder.describe())

        lease = claim(store, ref, owner=run_name(), on_wait=waiting)
        if lease is not None:
            with lease:
                measured = measure()
                if measured is None:
                    return _fallback(workers)
                chosen, timings = measured
                store.write(
                    ref,
                    {},
                    meta={
                        "device": device,
                        "purpose": purpose,
                        "batch_size": chosen.batch_size,
                        "workers": chosen.workers,
                        "images_per_s": chosen.images_per_s,
                        "timings": [t.as_dict() for t in timings],
                    },
                )
                how = "measured"
    meta = store.manifest(ref).meta
    return InferenceSettings(
        int(meta["batch_size"]),
        int(meta["workers"]) if workers is None else workers,
        how,
        ref,
        tuple(meta["timings"]),
    )


def _fallback(workers: int | None) -> InferenceSettings:
    from selftrain.mm.calibrate import sample_size

    stage_logger().info(
        "inference settings: this shard is too small to measure them on; batch %d (a shard of at least "
        "%d images measures them on this device)",
        FALLBACK_BATCH,
        sample_size(),
    )
    return InferenceSettings(FALLBACK_BATCH, workers, "fallback")


def with_smaller_batches(
    run: InferenceSettings, work: Callable[[int, int | None], T], what: str
) -> tuple[T, InferenceSettings]:
    """(``work(batch_size, workers)``, the settings it finally ran with). When the device runs
    out of memory (a shard of larger images than the measured ones, another job on the GPU),
    the whole work runs again at half the batch size, down to 1, each step logged as a
    warning naming ``what``; any other error, or running out of memory at batch 1, propagates."""
    from selftrain.mm.calibrate import out_of_memory

    batch = run.batch_size
    while True:
        try:
            result = work(batch, run.workers)
        except Exception as exc:
            if batch == 1 or not out_of_memory(exc):
                raise
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            stage_logger().warning("%s: out of memory at batch %d; again at batch %d: %s", what, batch, batch // 2, exc)
            batch //= 2
            continue
        return result, run if batch == run.batch_size else replace(run, batch_size=batch, how=f"{run.how}, halved")
