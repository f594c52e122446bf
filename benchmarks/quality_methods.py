"""Teacher vs ST vs ST++ (and Zoph et al. for detection) over seeds, on the composed
segmentation benchmark or on DeepForest.

    python -m benchmarks.quality_methods --task segmentation --seeds 0 1 2
    python -m benchmarks.quality_methods --task detection --seeds 0 1 2

Each seed runs the `self-training` flow once with all methods (they share the teacher, its
pseudo labels and its stability ranking) and reads the report: mIoU (segmentation) or bbox
mAP / mAP50 (detection) of every model on the held-out split, plus the quality of the
reliable vs unreliable pseudo labels against the unlabeled images' ground truth (a
diagnostic). The table gives every seed, the paired differences and their mean / SD.
Everything is cached in the store (the demo's by default): re-printing or adding a seed
costs only what is new.
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
    parser.add_argument("--task", choices=["segmentation", "detection"], required=True)
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=None, help="default: st st++ (+ zoph for detection)")
    parser.add_argument("--teacher-iters", type=int, default=None)
    parser.add_argument("--student-iters", type=int, default=None)
    parser.add_argument("--num-unlabeled", type=int, default=None, help="segmentation: composed unlabeled images")
    args = parser.parse_args(argv)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

    from app import demo

    methods = args.methods or (["zoph", "st", "st++"] if args.task == "detection" else ["st", "st++"])
    out = os.path.abspath(args.out)
    rows, t0 = [], time.time()
    for seed in args.seeds:
        ns = argparse.Namespace(
            teacher_iters=args.teacher_iters,
            student_iters=args.student_iters,
            score_threshold=None,
            teacher_aug=None,
            k=None,
            shard_size=None,
            seed=seed,
            methods=methods,
            num_labeled=None,
            max_unlabeled=None,
            max_val=None,
            num_unlabeled=args.num_unlabeled,
            num_val=None,
        )
        params = demo.detection_params(ns, out) if args.task == "detection" else demo.segmentation_params(ns, out)
        report = demo.run(params, out, f"benchmark-{args.task}-seed{seed}")
        rows.append(
            {
                "seed": seed,
                "metrics": report["metrics"],
                "quality": (report.get("ranking") or {}).get("quality"),
                "params": {
                    k: report["parameters"][k]
                    for k in ("teacher_iters", "student_iters", "k", "score_threshold", "tta_scales")
                },
            }
        )
    text = table(rows, args.task)
    print("\n" + text + f"\n\n({time.time() - t0:.0f} s; store {out}/store)")
    with open(os.path.join(out, f"quality-{args.task}.json"), "w") as f:
        json.dump({"rows": rows}, f, indent=1)
    with open(os.path.join(out, f"quality-{args.task}.md"), "w") as f:
        f.write(text + "\n")
    return 0


def table(rows: list[dict], task: str) -> str:
    metric = "mIoU" if task == "segmentation" else "bbox_mAP"
    models = list(rows[0]["metrics"])
    p = rows[0]["params"]
    lines = [
        f"{task}: {metric} on the held-out split; teacher {p['teacher_iters']} it, students "
        f"{p['student_iters']} it, k {p['k']}, threshold {p['score_threshold']}, TTA scales {p['tta_scales']} + flip",
        "",
        "| seed | " + " | ".join(models) + " |",
        "| --- " * (len(models) + 1) + "|",
    ]
    for r in rows:
        lines.append(
            f"| {r['seed']} | " + " | ".join(f"{r['metrics'][m].get(metric, float('nan')):.4f}" for m in models) + " |"
        )

    def sd(d):
        return statistics.stdev(d) if len(d) > 1 else float("nan")

    lines.append("")
    pairs = [(m, "teacher") for m in models if m != "teacher"] + (
        [("st++", "st")] if {"st", "st++"} <= set(models) else []
    )
    for a, b in pairs:
        d = [r["metrics"][a].get(metric, 0.0) - r["metrics"][b].get(metric, 0.0) for r in rows]
        lines.append(f"- {a} - {b}: {statistics.mean(d):+.4f} (SD {sd(d):.4f}), {sum(x > 0 for x in d)}/{len(d)} seeds")
    q = [r["quality"] for r in rows if r["quality"]]
    if q:
        keys = [k for k in q[0]["reliable"] if k != "images"]
        lines += [
            "",
            "Pseudo-label quality of the first teacher vs ground truth (mean over seeds):",
            "",
            "| group | " + " | ".join(keys) + " |",
            "| --- " * (len(keys) + 1) + "|",
        ]
        for g in ("reliable", "unreliable"):
            vals = [statistics.mean([x[g][k] for x in q if x[g][k] is not None] or [float("nan")]) for k in keys]
            lines.append(f"| {g} | " + " | ".join(f"{v:.3f}" for v in vals) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
