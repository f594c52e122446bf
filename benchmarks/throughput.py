"""Pseudo-labeling throughput, measured side by side in one process on one checkpoint and one
set of images (not a test: it prints ratios; the machine's noise cancels between variants).

    python -m benchmarks.throughput --task detection                # after `make demo`
    python -m benchmarks.throughput --task segmentation --repeats 5

Three ways of labeling the same images with the same TTA model (the teacher of the demo's
store, its TTA views: flip for detection, the kind's defaults for segmentation):

* **pipeline**: what `pseudo_label_shard` runs - selftrain.mm.inference.predict (decode,
  resize, TTA views, batches through a DataLoader, the model's test_step with the TTA merge)
  plus the kind's label_image on every prediction - at each batch size of ``--batch-sizes``,
  and the same with ``prefetch`` (the next batch decoded in a thread while the model runs) and
  with ``worker`` (decoding in one DataLoader worker process, as on a GPU);
* **bound**: the model alone - the same batches decoded and preprocessed beforehand, only
  ``test_step`` timed - at each batch size (the best is the bound);
* **naive**: the per-image loop users write - the test pipeline and ``test_step`` on one
  image at a time (OpenMMLab's high-level inference APIs do exactly this per call);
* **amp** (with ``--amp``): the pipeline with ``inference_precision="amp"`` (the network under
  autocast: bfloat16 on a CPU, float16 on a GPU) at each batch size, and the agreement of its
  labels with the float32 labels of the same images: ST++'s stability measure between the two
  (detection: the F1 of class-aware matches at IoU 0.5 of the boxes above ``--score-thr``;
  segmentation: the mean IoU of the label maps), averaged over the images;
* **paired** (decoding in this process, 0 DataLoader workers, the flow's choice on a CPU):
  the pipeline and the bound measured batch by batch in the same run: the
  pipeline's model runs every batch a second time, timed apart (:class:`PairedBound`; which of
  the two goes first alternates), so the bound is measured on the pipeline's own batches a
  few hundred milliseconds from them, and the machine's slow spells - 10 to 30 % between
  whole runs here - fall on both; the pipeline's time is the run's wall time less the second
  runs. Its ratio at each batch size is the precise one; the best-of-each ratio compares runs
  at different batch sizes;
* **steps** (with ``--steps``): where the pipeline's time goes, per image - reading and
  decoding, each TTA view's copy and transforms, the label rows - and the model's
  ``test_step``, each timed on its own over the images (3 passes);
* **auto**: the pipeline at the batch size and worker count that the flow's default
  (``inference_batch_size="auto"``) chooses on this device: measured first, as the first
  shard measures them (selftrain/mm/calibrate.py), then timed with the others.

Each variant runs ``--repeats`` times, interleaved, and the median of its images per second
is reported; then the ratios pipeline / bound (goal >= 0.95) and pipeline / naive (goal > 1 on
a CPU, >= 5 on a GPU), and what the flow's own choice reaches: auto / bound and auto / the
best pipeline batch.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from benchmarks import best_of, demo_teacher, interleaved_medians, save_results, synchronize


def step_times(model, images: list[dict], pipeline: list[dict], kind, labeled_meta: dict, passes: int = 3) -> dict:
    """Milliseconds per image of each step of the inference pipeline, each timed on its own:
    'read + decode' (its first transform), per TTA view its deep copy and each transform
    (mmcv's TestTimeAug runs every view on a copy of the decoded image), 'test_step' (the
    model at batch 2, inputs ready) and 'label rows' (the kind's label_image). ``passes``
    over the images; their sum per step, divided by the images timed."""
    import copy

    import torch
    from mmcv.transforms import TestTimeAug
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import DefaultScope

    from selftrain.mm.inference import ImageList

    with DefaultScope.overwrite_default_scope(kind.scope):
        dataset = ImageList(images, pipeline)
    load, rest = dataset.pipeline.transforms[0], list(dataset.pipeline.transforms[1:])
    spent: dict[str, float] = {}

    def timed(name: str, step, data):
        t0 = time.perf_counter()
        out = step(data)
        spent[name] = spent.get(name, 0.0) + time.perf_counter() - t0
        return out

    for _ in range(passes):
        for i, image in enumerate(images):
            data = timed("read + decode", load, {"img_path": image["image_uri"], "img_id": i})
            for step in rest:
                if isinstance(step, TestTimeAug):
                    for v, view in enumerate(step.subroutines):
                        x = timed(f"view {v + 1}: copy", copy.deepcopy, data)
                        for t in view.transforms:
                            x = timed(f"view {v + 1}: {type(t).__name__}", t, x)
                else:
                    data = timed(type(step).__name__, step, data)
    items = [dataset[i] for i in range(len(images))]
    with torch.no_grad():
        preds = [
            p
            for j in range(0, len(items), 2)
            for p in timed("test_step", model.test_step, pseudo_collate(items[j : j + 2]))
        ]
    spent["test_step"] *= passes  # timed once over the images
    for _ in range(passes):
        for image, pred in zip(images, preds, strict=True):
            timed("label rows", lambda p, image=image: kind.label_image(image, p, "", labeled_meta), pred)
    return {name: 1000 * t / (passes * len(images)) for name, t in spent.items()}


class PairedBound:
    """A model whose ``test_step`` runs every batch twice: once for the caller (the pipeline)
    and once more timed apart (the model-only bound on the same inputs), the timed one first on
    every other batch so that a warm cache favours neither. ``bound_s``: seconds in the timed
    runs; ``batches``: how many. Only ``test_step`` is forwarded (all that the inference loop
    calls)."""

    def __init__(self, model):
        self.model, self.bound_s, self.batches = model, 0.0, 0

    def _timed(self, batch) -> None:
        t0 = time.perf_counter()
        self.model.test_step(batch)
        synchronize()
        self.bound_s += time.perf_counter() - t0

    def test_step(self, batch):
        timed_first = self.batches % 2 == 1
        self.batches += 1
        if timed_first:
            self._timed(batch)
        out = self.model.test_step(batch)
        if not timed_first:
            synchronize()
            self._timed(batch)
        return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=["detection", "segmentation"], required=True)
    parser.add_argument("--store", default="runs/demo/store", help="a store with a trained teacher (the demo's)")
    parser.add_argument("--dataset", default=None, help="the dataset name in the store (default: the demo's)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=int, default=None, help="at most this many images")
    parser.add_argument("--amp", action="store_true", help="also time mixed precision and its label agreement")
    parser.add_argument("--score-thr", type=float, default=0.5, help="--amp, detection: the boxes compared")
    parser.add_argument("--steps", action="store_true", help="also time the pipeline's steps one by one")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)

    import torch
    from mmengine.dataset import pseudo_collate
    from mmengine.device import get_device

    from selftrain.kinds import KINDS
    from selftrain.mm.calibrate import measure_settings
    from selftrain.mm.inference import ImageList, build_model, predict
    from selftrain.stage import fetch_checkpoint

    kind = KINDS[args.task]
    demo = demo_teacher(kind, args.store, args.dataset, args.limit)
    store, teacher, meta, labeled_meta, cfg, images = (
        demo.store, demo.teacher, demo.meta, demo.labeled_meta, demo.cfg, demo.images
    )  # fmt: skip
    ckpt = fetch_checkpoint(store, teacher, "last", os.path.join("/tmp", f"throughput-{teacher.key}.pth"))
    model = build_model(kind.tta_model(cfg, len(labeled_meta["classes"])), kind.scope, ckpt)
    scales, flip = list(kind.default_tta_scales(kind.default_method)), True
    pipeline = kind.tta_pipeline(cfg, scales, flip)
    n = len(images)
    print(
        f"{args.task}: teacher {teacher.stage}/{teacher.key} ({meta['model_config']}), {n} images, "
        f"TTA scales {scales} x flip, device {get_device()}, torch threads {torch.get_num_threads()}",
        flush=True,
    )

    def pipeline_run(batch: int, prefetch: bool = False, workers: int | None = None, net=None) -> float:
        t0 = time.perf_counter()
        for image, pred in predict(
            net or model,
            images,
            pipeline,
            batch,
            workers,
            scope=kind.scope,
            by_shape=kind.batch_by_shape,
            prefetch=prefetch,
        ):
            kind.label_image(image, pred, pred.metainfo.get("load_error", ""), labeled_meta)
        synchronize()
        return n / (time.perf_counter() - t0)

    paired_ratios: dict[int, list[float]] = {}
    paired_bound: dict[int, list[float]] = {}

    def paired_run(batch: int) -> float:
        """The pipeline's rate at ``batch`` with the bound measured on its own batches
        (PairedBound); records the bound's rate and the ratio of the two. Always 0 workers:
        a worker process would go on decoding while the twin runs, so the time left after
        the twins would not be the pipeline's."""
        twin = PairedBound(model)
        t0 = time.perf_counter()
        for image, pred in predict(
            twin,
            images,
            pipeline,
            batch,
            0,
            scope=kind.scope,
            by_shape=kind.batch_by_shape,
        ):
            kind.label_image(image, pred, pred.metainfo.get("load_error", ""), labeled_meta)
        synchronize()
        pipeline_s = time.perf_counter() - t0 - twin.bound_s
        paired_ratios.setdefault(batch, []).append(twin.bound_s / pipeline_s)
        paired_bound.setdefault(batch, []).append(n / twin.bound_s)
        return n / pipeline_s

    from mmengine.registry import DefaultScope

    with DefaultScope.overwrite_default_scope(kind.scope):
        decoded = ImageList(images, pipeline)
        items = [decoded[i] for i in range(n)]  # decoded and preprocessed beforehand

    def bound_run(batch: int) -> float:
        from selftrain.mm.inference import grouped_test_step

        batches = [pseudo_collate(items[i : i + batch]) for i in range(0, n, batch)]
        t0 = time.perf_counter()
        with torch.no_grad():
            for b in batches:
                grouped_test_step(model, b) if kind.batch_by_shape else model.test_step(b)
        synchronize()
        return n / (time.perf_counter() - t0)

    def naive_run() -> float:
        from mmengine.dataset import Compose

        with DefaultScope.overwrite_default_scope(kind.scope):
            steps = Compose(pipeline)
        t0 = time.perf_counter()
        with torch.no_grad():
            for i, image in enumerate(images):
                data = steps({"img_path": image["image_uri"], "img_id": i})
                pred = model.test_step(pseudo_collate([data]))[0]
                kind.label_image(image, pred, pred.metainfo.get("load_error", ""), labeled_meta)
        synchronize()
        return n / (time.perf_counter() - t0)

    variants = {f"pipeline b{b}": (lambda b=b: pipeline_run(b)) for b in args.batch_sizes}
    variants |= {f"pipeline b{b} prefetch": (lambda b=b: pipeline_run(b, True)) for b in args.batch_sizes}
    variants |= {f"pipeline b{b} worker": (lambda b=b: pipeline_run(b, workers=1)) for b in args.batch_sizes}
    variants |= {f"bound b{b}": (lambda b=b: bound_run(b)) for b in args.batch_sizes}
    variants |= {f"paired b{b}": (lambda b=b: paired_run(b)) for b in args.batch_sizes}
    variants["naive"] = naive_run
    agreement = None
    if args.amp:
        amp_model = build_model(kind.tta_model(cfg, len(labeled_meta["classes"])), kind.scope, ckpt, "amp")
        variants |= {f"amp b{b}": (lambda b=b: pipeline_run(b, net=amp_model)) for b in args.batch_sizes}
        views = {}
        for name, net in (("fp32", model), ("amp", amp_model)):
            views[name] = {
                image["image_id"]: kind.stability_view(pred, args.score_thr, {})
                for image, pred in predict(net, images, pipeline, 2, 0, scope=kind.scope, by_shape=kind.batch_by_shape)
            }
        per_image = [kind.stability([views["amp"][i], views["fp32"][i]]) for i in views["fp32"]]
        agreement = sum(per_image) / len(per_image)
        print(f"amp / fp32 label agreement (ST++ stability of the two, mean over {n} images): {agreement:.4f}")
    pipeline_run(args.batch_sizes[0])  # warm-up: allocator, caches, lazy imports
    t0 = time.perf_counter()
    measured = measure_settings([model], images, pipeline, scope=kind.scope, by_shape=kind.batch_by_shape)
    if measured is None:
        raise SystemExit(f"{n} images are too few for the flow's measurement of the batch size")
    chosen, timings = measured
    calibration_s = time.perf_counter() - t0
    print(
        f"the flow's choice on this device: batch {chosen.batch_size}, {chosen.workers} workers "
        f"(measured in {calibration_s:.1f} s: "
        + ", ".join(f"b{t.batch_size} w{t.workers} {t.images_per_s:.1f}" for t in timings)
        + " images/s)",
        flush=True,
    )
    variants["auto"] = lambda: pipeline_run(chosen.batch_size, workers=chosen.workers)
    steps = step_times(model, images, pipeline, kind, labeled_meta) if args.steps else None
    median = interleaved_medians(variants, args.repeats)
    best_pipe, best_bound = best_of(median, "pipeline"), best_of(median, "bound")
    result = {
        "task": args.task,
        "images": n,
        "device": get_device(),
        "images_per_s": median,
        "best_pipeline": best_pipe,
        "best_bound": best_bound,
        "pipeline_over_bound": median[best_pipe] / median[best_bound],
        "pipeline_over_naive": median[best_pipe] / median["naive"],
        "auto": {"batch_size": chosen.batch_size, "workers": chosen.workers, "calibration_s": calibration_s},
        "auto_over_bound": median["auto"] / median[best_bound],
        "auto_over_best_pipeline": median["auto"] / median[best_pipe],
    }
    import statistics

    paired = {
        b: {
            "pipeline_over_bound": statistics.median(paired_ratios[b]),
            "pipeline": median[f"paired b{b}"],
            "bound": statistics.median(paired_bound[b]),
        }
        for b in args.batch_sizes
    }
    best_paired_pipe = max(paired, key=lambda b: paired[b]["pipeline"])
    best_paired_bound = max(paired, key=lambda b: paired[b]["bound"])
    result["paired"] = {
        "per_batch": paired,
        "best_pipeline_batch": best_paired_pipe,
        "best_bound_batch": best_paired_bound,
        "best_over_best": paired[best_paired_pipe]["pipeline"] / paired[best_paired_bound]["bound"],
    }
    if steps is not None:
        result["steps_ms_per_image"] = steps
    if args.amp:
        best_amp = best_of(median, "amp")
        result |= {
            "best_amp": best_amp,
            "amp_over_fp32": median[best_amp] / median[best_pipe],
            "amp_agreement": agreement,
        }
    print(f"\nimages/s (median of {args.repeats} runs):")
    for name, v in median.items():
        print(f"  {name:14s} {v:7.1f}")
    print(
        f"\npipeline / model-only bound: {result['pipeline_over_bound']:.2f} "
        f"({best_pipe} vs {best_bound}; goal >= 0.95)\n"
        f"pipeline / naive per-image loop: {result['pipeline_over_naive']:.2f}x (goal > 1 on CPU, >= 5 on GPU)\n"
        f"the flow's choice (auto: batch {chosen.batch_size}, {chosen.workers} workers) / bound: "
        f"{result['auto_over_bound']:.2f}; / the best pipeline batch: {result['auto_over_best_pipeline']:.2f}"
    )
    print(
        "paired, batch by batch, 0 workers (pipeline / bound at the same batch size, median of the runs): "
        + ", ".join(f"b{b} {v['pipeline_over_bound']:.3f}" for b, v in paired.items())
        + f"; best pipeline batch / best bound batch: {result['paired']['best_over_best']:.3f} "
        f"(b{best_paired_pipe}: {paired[best_paired_pipe]['pipeline']:.1f} images/s vs "
        f"b{best_paired_bound}: {paired[best_paired_bound]['bound']:.1f})"
    )
    if steps is not None:
        print("the pipeline step by step, ms per image: " + ", ".join(f"{k} {v:.3f}" for k, v in steps.items()))
    if args.amp:
        print(
            f"mixed precision ({result['best_amp']}) / float32 ({best_pipe}): {result['amp_over_fp32']:.2f}x; "
            f"label agreement {agreement:.4f}"
        )
    save_results(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
