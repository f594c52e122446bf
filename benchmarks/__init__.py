"""Benchmarks: scripts that measure side by side and print ratios (not tests)."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


def save_results(path: str | None, results) -> None:
    """Write a benchmark's results as JSON to ``path`` (``--json``), when one was given."""
    if path:
        with open(path, "w") as f:
            json.dump(results, f, indent=1)


@dataclass
class DemoTeacher:
    """The latest teacher of a store (the demo's, after `make demo`), with what inference needs."""

    store: Any  # storage.store.ArtifactStore
    dataset: str
    teacher: Any  # its ArtifactRef
    meta: dict  # the teacher's manifest meta (model_config, checkpoints, ...)
    labeled_meta: dict  # the labeled set's manifest meta (classes, ...)
    cfg: Any  # the model config (mmengine Config)
    images: list[dict]  # the largest unlabeled listing's rows (image_id, image_uri), at most ``limit``


def interleaved_medians(variants: dict[str, Callable[[], float]], repeats: int) -> dict[str, float]:
    """Run every variant (a callable returning a rate) ``repeats`` times, interleaved - each
    repeat runs them all in turn, so that the machine's slow spells fall on all of them - and
    return each one's median; prints every repeat's rates."""
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(repeats):
        for name, run in variants.items():
            samples[name].append(run())
        print(f"repeat {r + 1}/{repeats}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in samples.items()), flush=True)
    return {name: statistics.median(v) for name, v in samples.items()}


def best_of(median: dict[str, float], prefix: str) -> str:
    """The fastest variant whose name starts with ``prefix``."""
    return max((name for name in median if name.startswith(prefix)), key=median.__getitem__)


def synchronize() -> None:
    """Wait for the GPU's queued work (a no-op without CUDA), so that a timer stopped after it
    counts the work."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def demo_teacher(kind, store_url: str, dataset: str | None, limit: int | None) -> DemoTeacher:
    """The latest trained teacher of ``dataset`` (default: the demo's dataset of ``kind``) in
    ``store_url`` and its largest unlabeled listing; SystemExit naming what is missing."""
    from app import demo
    from storage.schemas import UNLABELED_IMAGES, read_parquet
    from storage.store import ArtifactStore

    dataset = dataset or demo.demo_dataset(kind.name)
    store = ArtifactStore(store_url)
    teachers = [r for r in store.list(dataset, "train") if store.manifest(r).meta.get("role") == "teacher"]
    if not teachers:
        raise SystemExit(f"no trained teacher of {dataset!r} in {store.url}: run `make demo` first")
    teacher = max(teachers, key=lambda r: store.manifest(r).created_at)
    meta = store.manifest(teacher).meta
    labeled = next(
        r for r in store.list(dataset, kind.dataset_stage) if store.manifest(r).meta.get("role") == "labeled"
    )
    listings = store.list(dataset, "unlabeled")
    if not listings:
        raise SystemExit(f"no unlabeled listing of {dataset!r} in {store.url}: run `make demo` first")
    listing = max(listings, key=lambda r: store.manifest(r).meta.get("num_images", 0))
    rows = read_parquet(store.read(listing, "images.parquet"), UNLABELED_IMAGES).to_pylist()
    return DemoTeacher(
        store=store,
        dataset=dataset,
        teacher=teacher,
        meta=meta,
        labeled_meta=store.manifest(labeled).meta,
        cfg=kind.load_config(meta["model_config"]),
        images=rows[:limit] if limit else rows,
    )
