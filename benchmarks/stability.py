"""Stability scoring (ST++), measured side by side in one process on one teacher's K
checkpoints and one set of images (not a test: it prints ratios).

    python -m benchmarks.stability --task detection                # after `make demo`
    python -m benchmarks.stability --task segmentation --repeats 5

Three ways of scoring the same images with the same K checkpoints (the demo store's latest
teacher; single scale, as ``score_stability`` predicts):

* **pipeline**: what ``score_stability`` runs - the K checkpoints held as K models,
  selftrain.mm.inference.predict_each (each image read, decoded and transformed once, every
  batch through the K models), the kind's stability views and score of every image;
* **per checkpoint**: the loop it replaced - one full inference pass per checkpoint, so every
  image is read and decoded K times;
* **bound**: the models alone - the batches decoded and preprocessed beforehand, once for all
  K, only the K ``test_step`` calls timed.

Each variant runs ``--repeats`` times, interleaved, at each batch size, and the median of its
images per second is reported (an image counts once, whatever K); then the ratios pipeline /
bound (goal >= 0.95, as pseudo labeling) and pipeline / per checkpoint.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from benchmarks import best_of, demo_teacher, interleaved_medians, save_results, synchronize


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=["detection", "segmentation"], required=True)
    parser.add_argument("--store", default="runs/demo/store", help="a store with a trained teacher (the demo's)")
    parser.add_argument("--dataset", default=None, help="the dataset name in the store (default: the demo's)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=int, default=None, help="at most this many images")
    parser.add_argument("--score-thr", type=float, default=0.5, help="detection: the boxes compared (ST++ rule)")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)

    import torch
    from mmengine.dataset import pseudo_collate
    from mmengine.device import get_device
    from mmengine.registry import DefaultScope

    from selftrain.kinds import KINDS
    from selftrain.mm.inference import ImageList, build_model, grouped_test_step, predict, predict_each
    from selftrain.stage import fetch_checkpoint

    kind = KINDS[args.task]
    demo = demo_teacher(kind, args.store, args.dataset, args.limit)
    k = int(demo.meta["checkpoints"])
    if k < 2:
        raise SystemExit(f"the teacher {demo.teacher.key} kept {k} checkpoint(s); stability needs 2 or more")
    num_classes = len(demo.labeled_meta["classes"])
    models = [
        build_model(
            kind.test_model(demo.cfg, num_classes),
            kind.scope,
            fetch_checkpoint(
                demo.store, demo.teacher, f"ckpt-{j}", os.path.join("/tmp", f"stability-{demo.teacher.key}-{j}.pth")
            ),
        )
        for j in range(1, k + 1)
    ]
    pipeline = kind.test_pipeline(demo.cfg)
    images, n = demo.images, len(demo.images)
    print(
        f"{args.task}: teacher {demo.teacher.stage}/{demo.teacher.key} ({demo.meta['model_config']}), "
        f"K = {k} checkpoints, {n} images, device {get_device()}, torch threads {torch.get_num_threads()}",
        flush=True,
    )

    def score(per_image: dict[str, list]) -> dict[str, float]:
        return {image_id: kind.stability(views) for image_id, views in per_image.items()}

    def pipeline_run(batch: int) -> float:
        t0 = time.perf_counter()
        per_image = {}
        for image, preds in predict_each(
            models, images, pipeline, batch, scope=kind.scope, by_shape=kind.batch_by_shape
        ):
            per_image[image["image_id"]] = [kind.stability_view(p, args.score_thr, {}) for p in preds]
        score(per_image)
        synchronize()
        return n / (time.perf_counter() - t0)

    def per_checkpoint_run(batch: int) -> float:
        t0 = time.perf_counter()
        per_image: dict[str, list] = {im["image_id"]: [] for im in images}
        for model in models:
            for image, pred in predict(model, images, pipeline, batch, scope=kind.scope, by_shape=kind.batch_by_shape):
                per_image[image["image_id"]].append(kind.stability_view(pred, args.score_thr, {}))
        score(per_image)
        synchronize()
        return n / (time.perf_counter() - t0)

    with DefaultScope.overwrite_default_scope(kind.scope):
        decoded = ImageList(images, pipeline)
        items = [decoded[i] for i in range(n)]  # decoded and preprocessed beforehand, once

    def bound_run(batch: int) -> float:
        batches = [pseudo_collate(items[i : i + batch]) for i in range(0, n, batch)]
        t0 = time.perf_counter()
        with torch.no_grad():
            for b in batches:
                for model in models:
                    grouped_test_step(model, b) if kind.batch_by_shape else model.test_step(b)
        synchronize()
        return n / (time.perf_counter() - t0)

    variants = {}
    for b in args.batch_sizes:
        variants[f"pipeline b{b}"] = lambda b=b: pipeline_run(b)
        variants[f"per checkpoint b{b}"] = lambda b=b: per_checkpoint_run(b)
        variants[f"bound b{b}"] = lambda b=b: bound_run(b)
    pipeline_run(args.batch_sizes[0])  # warm-up: allocator, caches, lazy imports
    median = interleaved_medians(variants, args.repeats)
    best_pipe, best_old = best_of(median, "pipeline"), best_of(median, "per checkpoint")
    best_bound = best_of(median, "bound")
    result = {
        "task": args.task,
        "images": n,
        "checkpoints": k,
        "device": get_device(),
        "images_per_s": median,
        "best_pipeline": best_pipe,
        "best_per_checkpoint": best_old,
        "best_bound": best_bound,
        "pipeline_over_bound": median[best_pipe] / median[best_bound],
        "per_checkpoint_over_bound": median[best_old] / median[best_bound],
        "pipeline_over_per_checkpoint": median[best_pipe] / median[best_old],
    }
    print(f"\nimages/s, each image scored by all {k} checkpoints (median of {args.repeats} runs):")
    for name, v in median.items():
        print(f"  {name:20s} {v:7.1f}")
    print(
        f"\npipeline / model-only bound: {result['pipeline_over_bound']:.2f} "
        f"({best_pipe} vs {best_bound}; goal >= 0.95)\n"
        f"per-checkpoint passes / bound: {result['per_checkpoint_over_bound']:.2f} ({best_old})\n"
        f"pipeline / per-checkpoint passes: {result['pipeline_over_per_checkpoint']:.2f}x"
    )
    save_results(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
