"""Quality benchmark on DeepForest: does self-training beat simply training longer?

    python -m benchmarks.quality_deepforest --seeds 0 1 2 [--teacher-iters 900 --extra-iters 900]

For each training seed (the labeled split is fixed, so seeds vary only initialisation of the
heads, data order and augmentation):
  teacher  trained on the labeled tiles for T iterations;
  control  the teacher continued on labeled tiles only for exactly the student's extra
           iterations, with the same schedule (warm-up, cosine) and seed;
  student  the teacher continued on labeled + pseudo-labeled tiles (half/half batches,
           Zoph et al. loss normalisation) for the same extra iterations.
All three are evaluated on the held-out scene (bbox mAP, mAP50). The table reports each seed,
the paired differences student - control and student - teacher, their mean and standard
deviation, and the number of seeds the student wins. Every stage is cached in the store, so
adding seeds or re-printing costs only what is new.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--out", default="runs/demo", help="shares the demo's data and store: the demo's teacher and student are seed 0"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--teacher-iters", type=int, default=900)
    parser.add_argument("--extra-iters", type=int, default=600, help="iterations of the student and the control")
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--score-threshold", type=float, default=0.4)
    parser.add_argument("--num-labeled", "--num-labelled", dest="num_labeled", type=int, default=12)
    parser.add_argument("--split-seed", type=int, default=0, help="which tiles are labeled (fixed)")
    parser.add_argument("--tta-scales", type=float, nargs="+", default=[1.0])
    parser.add_argument("--no-flip", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

    from prefect import flow

    from app.demo import DEMO_PARAMS
    from selftrain.datasets.deepforest import prepare
    from selftrain.stage import get_store
    from tasks.evaluate import evaluate
    from tasks.list_unlabeled import list_unlabeled
    from tasks.pseudo_label_shard import pseudo_label_shard
    from tasks.register_dataset import register_dataset
    from tasks.shard_images import shard_images
    from tasks.train_model import train_model

    out = os.path.abspath(args.out)
    data = prepare(os.path.join(out, "data", "deepforest"), num_labeled=args.num_labeled, seed=args.split_seed)
    store_url = os.path.join(out, "store")
    config = "det/retinanet_mnv2_256_cpu"

    @flow(name="quality-benchmark")
    def benchmark() -> list[dict]:
        labeled = register_dataset(store_url, "deepforest", data.labeled_json, data.image_root, "labeled")
        val = register_dataset(store_url, "deepforest", data.val_json, data.image_root, "val")
        shards = shard_images(
            store_url, list_unlabeled(store_url, "deepforest", data.unlabeled_dir), DEMO_PARAMS["shard_size"]
        ).shards
        rows = []
        for seed in args.seeds:
            teacher = train_model(
                store_url, config, labeled, val, role="teacher", iters=args.teacher_iters, k=args.k, seed=seed
            )
            pseudo = [
                pseudo_label_shard(
                    store_url,
                    config,
                    teacher,
                    s,
                    labeled,
                    scales=args.tta_scales,
                    flip=not args.no_flip,
                    score_thr=args.score_threshold,
                )
                for s in shards
            ]
            control = train_model(
                store_url,
                config,
                labeled,
                val,
                role="control",
                iters=args.extra_iters,
                k=args.k,
                seed=seed,
                init=teacher,
            )
            student = train_model(
                store_url,
                config,
                labeled,
                val,
                role="student",
                iters=args.extra_iters,
                k=args.k,
                seed=seed,
                init=teacher,
                pseudo=pseudo,
            )
            row = {"seed": seed}
            for name, model in (("teacher", teacher), ("control", control), ("student", student)):
                m = get_store(store_url).read_json(evaluate(store_url, config, model, val), "metrics.json")
                row[name] = {"mAP": m["bbox_mAP"], "mAP50": m["bbox_mAP_50"]}
            rows.append(row)
        return rows

    t0 = time.time()
    rows = benchmark()
    print(table(rows, args))
    print(f"\n({time.time() - t0:.0f} s; store {store_url})")
    with open(os.path.join(out, "quality.json"), "w") as f:
        json.dump({"args": vars(args), "rows": rows}, f, indent=1)
    return 0


def table(rows: list[dict], args) -> str:
    lines = [
        f"DeepForest, {args.num_labeled} labeled tiles (split seed {args.split_seed}), teacher "
        f"{args.teacher_iters} it, control/student +{args.extra_iters} it, threshold {args.score_threshold}, "
        f"TTA scales {args.tta_scales}{'' if args.no_flip else ' + flip'}",
        "",
        "| seed | teacher mAP | control mAP | student mAP | student - control | student - teacher "
        "| teacher mAP50 | control mAP50 | student mAP50 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        t, c, s = r["teacher"], r["control"], r["student"]
        lines.append(
            f"| {r['seed']} | {t['mAP']:.4f} | {c['mAP']:.4f} | {s['mAP']:.4f} | {s['mAP'] - c['mAP']:+.4f} "
            f"| {s['mAP'] - t['mAP']:+.4f} | {t['mAP50']:.4f} | {c['mAP50']:.4f} | {s['mAP50']:.4f} |"
        )
    for metric in ("mAP", "mAP50"):
        dc = [r["student"][metric] - r["control"][metric] for r in rows]
        dt = [r["student"][metric] - r["teacher"][metric] for r in rows]

        def sd(d):
            return statistics.stdev(d) if len(d) > 1 else float("nan")

        lines.append(
            f"\n{metric}: student - control {statistics.mean(dc):+.4f} (SD {sd(dc):.4f}), wins "
            f"{sum(d > 0 for d in dc)}/{len(dc)}; student - teacher {statistics.mean(dt):+.4f} "
            f"(SD {sd(dt):.4f}), wins {sum(d > 0 for d in dt)}/{len(dt)}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
