"""Choose the inference batch size and DataLoader worker count on the device, by measuring them.

The fastest batch size depends on the device, the model, its TTA views and the images: on a
2-core CPU it was 4 on one day and 2 on the next (the README's performance section), batch 8
reaching 0.55-0.74 of the best; on a GPU it is larger. So pseudo labeling and stability
scoring (``inference_batch_size="auto"``, the default) time the real inference loop
(:func:`selftrain.mm.inference.predict_each`: decode, transforms, DataLoader, ``test_step``) on
the first 16 images of their shard (64 on a GPU; a smaller shard measures nothing):

1. one untimed batch of one image (lazy initialisation, allocator, caches);
2. batch sizes 1, 2, 4, ... (up to half the sample), with the device's default workers, each
   a whole pass over the same sample, the DataLoader's start included (a shard pays it too).
   Doubling stops at the first size below ``SLOWER`` of the best so far, or at one that fails
   (CUDA out of memory);
3. the same batch sizes again (``ROUNDS`` rounds; each setting's best rate counts, since a
   busy spell of the machine only slows a pass down);
4. at the fastest batch size, each other DataLoader worker count of :func:`worker_counts`,
   ``ROUNDS`` times; a count whose workers fail is recorded with its error and not chosen.

:func:`choose` then takes the fastest batch size, and more workers only when they are more
than ``MARGIN`` faster (a worker process costs memory and a fork per shard). The flow stores
the choice per device (selftrain/inference_settings.py), so this runs once per device, model
config and TTA, not per shard.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

# images timed per setting (the shard's first; a smaller shard measures nothing): batch sizes
# up to 8 on a CPU, up to 32 on a GPU; the flow's shards hold 64 images by default
SAMPLE_IMAGES = {"cpu": 16, "cuda": 64}
BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)
SLOWER = 0.75  # stop doubling the batch once it is below this fraction of the best so far
MARGIN = 0.05  # more workers must be this much faster to be chosen
ROUNDS = 2  # every setting is timed this many times (interleaved); its best rate counts


@dataclass(frozen=True)
class Timing:
    """One measured setting: ``images_per_s`` (images per second, steady state, > 0) of the
    inference loop at ``batch_size`` images per batch and ``workers`` DataLoader worker
    processes; ``note``: why a setting could not run (e.g. 'CUDA out of memory'), its rate 0."""

    batch_size: int
    workers: int
    images_per_s: float
    note: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def sample_size() -> int:
    """Images a measurement needs on this device (SAMPLE_IMAGES: 16 on a CPU, 64 on a GPU)."""
    from mmengine.device import get_device

    return SAMPLE_IMAGES["cuda" if get_device() == "cuda" else "cpu"]


def default_workers() -> int:
    """DataLoader workers when nothing was measured: 0 on a CPU (the model already uses every
    core and decoding an image costs little next to it; worker processes forked from a
    long-running flow process also died once here, exit code 1, no trace), min(4, usable
    cores) on a GPU (decoding in workers keeps the GPU fed)."""
    from mmengine.device import get_device

    from selftrain.mm.launch import usable_cores

    return min(4, usable_cores()) if get_device() == "cuda" else 0


def worker_counts(cores: int) -> list[int]:
    """The worker counts tried: 0 and each of 1, 2, 4, 8 below the usable ``cores`` (one core
    stays with the main process). 2 cores: [0, 1]; 16 cores: [0, 1, 2, 4, 8]."""
    return [0] + [w for w in (1, 2, 4, 8) if w < cores]


def batch_candidates(sample: int) -> list[int]:
    """The batch sizes of BATCH_SIZES that leave a timed batch after the first in ``sample``
    images (at most sample / 2), and always 1. 16 images: [1, 2, 4, 8]."""
    return [b for b in BATCH_SIZES if b == 1 or 2 * b <= sample]


def choose(timings: list[Timing], margin: float = MARGIN) -> Timing:
    """The setting to run: among the timings of the fastest batch size (ties: the smaller),
    the fewest workers unless more workers are more than ``margin`` faster than the fewest.
    Raises ValueError when nothing ran (every rate 0)."""
    ran = [t for t in timings if t.images_per_s > 0]
    if not ran:
        raise ValueError(f"no inference setting ran: {[t.note for t in timings]}")
    top = max(t.images_per_s for t in ran)
    batch = min(t.batch_size for t in ran if t.images_per_s == top)
    same = sorted((t for t in ran if t.batch_size == batch), key=lambda t: t.workers)
    fewest, fastest = same[0], max(same, key=lambda t: t.images_per_s)
    return fastest if fastest.images_per_s > (1 + margin) * fewest.images_per_s else fewest


def device_description() -> str:
    """What the choice depends on, as a stable text: 'cuda <GPU name>, <n> cores, torch
    <version>', or 'cpu <model name>, <n> cores, <m> threads, torch <version>' (cores: this
    process's CPU affinity; threads: torch's intra-op threads)."""
    import torch

    from selftrain.mm.launch import usable_cores

    if torch.cuda.is_available():  # the host's cores too: they bound the DataLoader workers
        gpu = torch.cuda.get_device_name(torch.cuda.current_device())
        return f"cuda {gpu}, {usable_cores()} cores, torch {torch.__version__}"
    return f"cpu {cpu_model()}, {usable_cores()} cores, {torch.get_num_threads()} threads, torch {torch.__version__}"


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else platform.processor() or 'unknown'."""
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def images_per_second(
    models: list, images: list[dict], pipeline, batch_size: int, workers: int, *, scope: str, by_shape: bool
) -> float:
    """Images per second of a whole pass of :func:`~selftrain.mm.inference.predict_each` over
    ``images`` at this setting, the DataLoader's start included (a shard pays it too; leaving
    out the first batch would let worker processes decode ahead untimed and favour the
    largest batch)."""
    from selftrain.mm.inference import predict_each

    _synchronize()
    start = time.perf_counter()
    for _ in predict_each(models, images, pipeline, batch_size, workers, scope=scope, by_shape=by_shape):
        pass
    _synchronize()
    return len(images) / max(time.perf_counter() - start, 1e-9)


def _synchronize() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is the device running out of memory (CUDA's OutOfMemoryError, or an
    error saying 'out of memory')."""
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def measure_settings(
    models: list, images: list[dict], pipeline, *, scope: str, by_shape: bool, sample: int | None = None
) -> tuple[Timing, list[Timing]] | None:
    """(the chosen setting, every timing) for inference of ``models`` through ``pipeline`` on
    the first ``sample`` images of ``images`` (default: SAMPLE_IMAGES of the device; batch
    sizes up to sample / 2), or None when there are fewer (a choice made on fewer images
    would be kept for the device: the caller uses its fallback and a later, larger shard
    measures). Runs the steps of the module docstring, every setting ``ROUNDS`` times in
    interleaved rounds, and keeps each setting's best rate (a busy spell of the machine only
    ever slows a pass down). A setting that fails (CUDA out of memory, a DataLoader worker
    that died) is recorded with rate 0 and its error, never chosen, and ends the doubling;
    other errors (storage unreachable: InfrastructureError) propagate. Raises ValueError when
    no setting ran at all (the errors named)."""
    import torch

    from selftrain.mm.inference import predict_each
    from selftrain.mm.launch import usable_cores

    sample = sample or sample_size()
    if len(images) < sample:
        return None
    images = images[:sample]
    for _ in predict_each(models, images[:1], pipeline, 1, 0, scope=scope, by_shape=by_shape):
        pass  # warm-up, not timed
    rates: dict[tuple[int, int], float] = {}
    notes: dict[tuple[int, int], str] = {}

    def run(batch: int, workers: int) -> float:
        """The setting's rate, its best over the rounds; 0 once it failed (CUDA out of memory,
        a DataLoader worker that died...): a setting that failed once is never chosen."""
        if notes.get((batch, workers)):
            return 0.0
        try:
            rate = images_per_second(models, images, pipeline, batch, workers, scope=scope, by_shape=by_shape)
        except Exception as exc:
            # the setting's own failures are recorded; any other (storage unreachable, a bug)
            # propagates, so that an outage is retried as everywhere else
            if not (out_of_memory(exc) or "DataLoader worker" in str(exc)):
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            rates[batch, workers], notes[batch, workers] = 0.0, f"{type(exc).__name__}: {exc}"[:300]
            return 0.0
        rates[batch, workers] = max(rate, rates.get((batch, workers), 0.0))
        return rate

    start = default_workers()
    best = 0.0
    for batch in batch_candidates(len(images)):  # round 1: doubling
        rate = run(batch, start)
        best = max(best, rate)
        if rate < SLOWER * best or rate == 0.0:
            break
    for _ in range(ROUNDS - 1):  # later rounds: the same sizes again
        for batch, workers in [k for k, v in rates.items() if v > 0]:
            run(batch, workers)
    batch = choose(_table(rates, notes)).batch_size  # ValueError when nothing ran at all
    for _ in range(ROUNDS):
        for workers in worker_counts(usable_cores()):
            if workers != start:
                run(batch, workers)
    table = _table(rates, notes)
    return choose(table), table


def _table(rates: dict[tuple[int, int], float], notes: dict[tuple[int, int], str]) -> list[Timing]:
    return [Timing(b, w, rate, notes.get((b, w), "")) for (b, w), rate in rates.items()]
