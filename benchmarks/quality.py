"""Quality benchmark: does self-training beat training as long on the labeled set alone?

    python -m benchmarks.quality --task segmentation --seeds 0 1 2 3 4
    python -m benchmarks.quality --task detection --seeds 0 1 2 3 4

For every seed (the labeled split is fixed; a seed varies initialisation, data order and
augmentation) it runs the `self-training` flow on the demo's data with the papers' default
recipes (detection: Zoph et al.; segmentation: ST and ST++, which share the teacher, its pseudo
labels and its ranking), then trains one **control** per student: the same recipe, the same
initialisation (the teacher for Zoph et al., a fresh model for ST / ST++), the same
augmentation of the labeled images, the same seed and exactly as many iterations as the
student, on the labeled set only. Every model is evaluated on the held-out split.

With ``--alpha-experiment`` (Zoph et al. 2020, Appendix B) every seed also trains two zoph
students at alpha = 4 from the same teacher and pseudo labels: with the paper's loss
normalisation and with the plain weighted loss ``Lh + 4 Lp`` (``normalize_loss=False``); a
training that fails (diverges) is recorded with its error.

With ``--st-ablation`` (segmentation) every seed also trains ST students that take apart what
the student's pseudo-labeled half costs or brings: the strong augmentation of those images -
ST++'s (``strong``, the default), without its hue jitter (``strong_no_hue``) or none (weak
only) - crossed with their labels - the teacher's pseudo masks, or the images' ground-truth
masks put in their place (an oracle: the same student, schedule and sampling with labels as
good as they get). Each is evaluated like the others; the table gives them beside the control.

The table gives every seed and, per method, the paired differences student - control and
student - teacher (mean, SD, wins), with two one-sided paired tests of "the student is
better": Student's paired t-test and the exact Wilcoxon signed-rank test (with 5 seeds its
smallest possible p is 1/32 = 0.031). Every stage is cached in the store (by default under the
user cache folder, outside the working tree), so adding seeds costs only the new seeds and an
interrupted benchmark resumes where it stopped.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import posixpath
import statistics
import sys
import time

from app.local_prefect import use_local_defaults

DEFAULT_METHODS = {"detection": ["zoph"], "segmentation": ["st", "st++"]}


def default_out() -> str:
    """The benchmark's folder (data, store, tables): $XDG_CACHE_HOME/selftrain/quality, by
    default ~/.cache/selftrain/quality."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "selftrain", "quality")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=sorted(DEFAULT_METHODS), required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--methods", nargs="+", default=None, help="default: zoph (detection), st st++ (segmentation)")
    parser.add_argument("--out", default=None, help=f"data, store and tables (default {default_out()})")
    parser.add_argument("--teacher-iters", type=int, default=None, help="default: the demo's")
    parser.add_argument("--student-iters", type=int, default=None, help="default: the papers' schedules")
    parser.add_argument(
        "--num-labeled",
        "--num-labelled",
        dest="num_labeled",
        type=int,
        default=None,
        help="the labeled split's size (default: the demo's, 12 DeepForest tiles / 16 composed images); the "
        "rest of the pool stays unlabeled. Another size is another benchmark: by default its own folder, "
        f"{default_out()}-labeled<N>",
    )
    parser.add_argument(
        "--alpha-experiment",
        action="store_true",
        help="also zoph students at alpha 4 with and without loss normalisation (Zoph et al. Appendix B)",
    )
    parser.add_argument(
        "--st-ablation",
        action="store_true",
        help="segmentation: also ST students with each strong augmentation (strong, strong_no_hue, none), on "
        "the teacher's pseudo masks and on the ground-truth masks in their place",
    )
    parser.add_argument(
        "--strong-aug",
        default=None,
        help="st / st++: the students' strong augmentation (the flow's strong_aug; default: the papers', "
        "'strong'); the controls do not depend on it and are reused",
    )
    args = parser.parse_args(argv)
    if args.strong_aug is not None:
        from selftrain.kinds import KINDS
        from selftrain.mm.configs import ConfigError, strong_transforms

        if args.st_ablation:
            parser.error("--st-ablation trains every strong augmentation itself; leave out --strong-aug")
        if not {"st", "st++"} & set(args.methods or DEFAULT_METHODS[args.task]):
            parser.error("--strong-aug applies to st / st++ students; name one of them in --methods")
        try:  # before any data is prepared or trained
            strong_transforms(KINDS[args.task].config_folder, args.strong_aug)
        except ConfigError as exc:
            parser.error(f"--strong-aug: {exc}")
    if args.st_ablation:
        from selftrain.kinds import KINDS

        if KINDS[args.task].made != "masks" or "st" not in (args.methods or ["st"]):  # ground-truth masks
            parser.error("--st-ablation needs --task segmentation and the st method")
    if args.num_labeled is not None and args.num_labeled < 1:
        parser.error(f"--num-labeled must be at least 1; got {args.num_labeled}")
    use_local_defaults()
    labeled_suffix = f"-labeled{args.num_labeled}" if args.num_labeled is not None else ""
    # the data folder holds one split at a time: another labeled size gets its own folder, so that
    # two benchmarks (or this one and the demo's) never rebuild each other's data under them
    out = os.path.abspath(args.out or default_out() + labeled_suffix)
    methods = args.methods or DEFAULT_METHODS[args.task]
    t0 = time.time()
    rows = [run_seed(args.task, seed, methods, args, out) for seed in args.seeds]
    text = table(rows, args.task, methods)
    print("\n" + text + f"\n\n({time.time() - t0:.0f} s; store {out}/store)")
    os.makedirs(out, exist_ok=True)
    name = f"quality-{args.task}" + (f"-strong-{args.strong_aug}" if args.strong_aug is not None else "")
    name += labeled_suffix
    with open(os.path.join(out, f"{name}.json"), "w") as f:
        json.dump({"methods": methods, "rows": rows}, f, indent=1)
    with open(os.path.join(out, f"{name}.md"), "w") as f:
        f.write(text + "\n")
    return 0


def demo_arguments(
    teacher_iters: int | None, student_iters: int | None, seed: int, methods: list[str], num_labeled: int | None = None
):
    """The demo's command-line arguments for one benchmark seed: its defaults (every option it
    has), with the schedule, the seed, the methods and the labeled split's size set."""
    from app import demo

    ns = demo.arguments().parse_args([])
    ns.teacher_iters, ns.student_iters, ns.seed, ns.methods = teacher_iters, student_iters, seed, methods
    ns.num_labeled = num_labeled
    return ns


def run_seed(task: str, seed: int, methods: list[str], args, out: str) -> dict:
    """One seed: the flow (teacher, students, evaluations; cached) and one control per student."""
    from prefect import flow

    from app import demo
    from selftrain.kinds import KINDS
    from selftrain.stage import get_store
    from tasks.evaluate import evaluate
    from tasks.train_model import train_model

    make_params, _ = demo.DEMOS[task]
    num_labeled = getattr(args, "num_labeled", None)
    params = make_params(demo_arguments(args.teacher_iters, args.student_iters, seed, methods, num_labeled), out)
    name = f"quality-{task}-seed{seed}"
    if getattr(args, "strong_aug", None) is not None:  # checked as the flow checks it (st / st++ only)
        params = type(params).model_validate(params.model_dump() | {"strong_aug": args.strong_aug})
        name += f"-strong-{args.strong_aug}"
    report = demo.run(params, out, name)
    store = get_store(params.store)
    metric = KINDS[task].metrics[0]  # bbox_mAP | mIoU

    def model(name: str):
        """The stored artifact the report names (its URI ends in <dataset>/<stage>/<key>)."""
        return store.ref(*report["artifacts"][name].rstrip("/").split("/")[-3:])

    labeled, val, teacher = model("labeled"), model("val"), model("teacher")

    @flow(name="quality-controls")
    def controls() -> dict[str, dict]:
        result = {}
        for method in methods:
            meta = store.manifest(model(method)).meta
            p = meta["params"]
            control = train_model(
                params.store,
                params.config,
                labeled,
                val,
                role="control",
                iters=int(meta["iters"]),
                k=int(p["k"]),
                seed=int(p["seed"]),
                aug=p["aug"],
                pretrained=bool(p["pretrained"]),
                init=teacher if method == "zoph" else None,
            )
            metrics = store.read_json(evaluate(params.store, params.config, control, val), "metrics.json")
            result[method] = {
                "value": float(metrics[metric]),
                "validations": checkpoint_validations(store, control, KINDS[task]),
                "ref": control,
            }
        return result

    control = controls()

    @flow(name="quality-pool")
    def on_the_pool() -> dict[str, float]:
        """Every model on the unlabeled pool's own ground truth (unlabeled_gt: never used in
        training): how well the teacher labels the images its students learn from, and whether
        learning from its pseudo labels made a model better or worse on those very images."""
        pool = pool_set(params).register(params.store, params.dataset, "val", like=labeled)
        models = {"teacher": teacher} | {m: model(m) for m in methods}
        models |= {f"{m} control": c["ref"] for m, c in control.items()}
        return {
            name: float(store.read_json(evaluate(params.store, params.config, ref, pool), "metrics.json")[metric])
            for name, ref in models.items()
        }

    row = {
        "seed": seed,
        "metric": metric,
        "teacher": float(report["metrics"]["teacher"][metric]),
        "students": {m: float(report["metrics"][m][metric]) for m in methods},
        "controls": {m: c["value"] for m, c in control.items()},
        # the same models on the unlabeled images' own ground truth (the demo's data has it)
        "pool": on_the_pool() if params.unlabeled_gt is not None else None,
        "iters": {m: int(store.manifest(model(m)).meta["iters"]) for m in ["teacher", *methods]},
        # each training's own validations at its K checkpoints: overfitting shows here
        "validations": {m: checkpoint_validations(store, model(m), KINDS[task]) for m in ["teacher", *methods]}
        | {f"{m} control": c["validations"] for m, c in control.items()},
        "strong_aug": params.strong_aug,
        "num_labeled": int(store.manifest(labeled).meta.get("num_images", 0)),
    }
    if args.st_ablation:
        row["st_ablation"] = st_ablation(params, store, report, out, seed, metric, row)
    if args.alpha_experiment:
        row["alpha4"] = {}
        for name, normalize in (("normalised", True), ("plain", False)):
            variant = params.model_copy(  # zoph students have no strong augmentation to choose
                update={"method": ["zoph"], "alpha": 4.0, "normalize_loss": normalize, "strong_aug": "strong"}
            )
            try:
                r = demo.run(variant, out, f"quality-{task}-seed{seed}-alpha4-{name}")
                row["alpha4"][name] = {"value": float(r["metrics"]["zoph"][metric]), "error": None}
            except Exception as e:  # a diverged training is a result here, not a crash
                row["alpha4"][name] = {"value": None, "error": f"{type(e).__name__}: {e}"[:300]}
    return row


def pool_set(params):
    """The unlabeled pool as a held-out set of the labeled set's kind, with its ground truth
    (``unlabeled_gt``: a COCO file whose images lie under the labeled set's image root, or a
    folder of label maps named as the unlabeled images) - for measuring, never for training."""
    from flows.params import CocoSet

    lab = params.labeled
    if isinstance(lab, CocoSet):
        return lab.model_copy(update={"ann_file": params.unlabeled_gt})
    return lab.model_copy(update={"img_dir": params.unlabeled, "ann_dir": params.unlabeled_gt, "split": None})


def checkpoint_validations(store, model, kind) -> list[float]:
    """The validations a stored training of task ``kind`` (selftrain.kinds.TaskKind) ran at its
    K evenly spaced checkpoints (its history.json, in order), as the task's first metric (a
    fraction: bbox_mAP or mIoU)."""
    history = store.read_json(model, "history.json")
    return [kind.metrics_from(r)[kind.metrics[0]] for r in history if kind.val_metric in r]


STRONG_VARIANTS = ("strong", "strong_no_hue", "none")


def st_ablation(params, store, report: dict, out: str, seed: int, metric: str, row: dict) -> dict:
    """One seed's ST students with each strong augmentation of STRONG_VARIANTS, on the teacher's
    pseudo masks ('pseudo': the flow, as a user runs it with ``strong_aug``) and on the
    unlabeled images' ground-truth masks in their place ('ground truth': the same images, the
    same schedule, thresholds and sampling as the st student of ``report``, checked). Returns
    {labels: {strong augmentation: metric}}. Raises ValueError without ground truth for the
    unlabeled images (``unlabeled_gt``), RuntimeError when a ground-truth student's images or
    schedule differ from the st student's."""
    from app import demo
    from tasks.choose_thresholds import choose_thresholds
    from tasks.evaluate import evaluate
    from tasks.train_model import train_model

    def ref(uri: str):
        return store.ref(*uri.rstrip("/").split("/")[-3:])

    if params.unlabeled_gt is None:
        raise ValueError("--st-ablation needs the unlabeled images' ground truth (unlabeled_gt)")
    result: dict[str, dict[str, float]] = {"pseudo": {"strong": row["students"]["st"]}, "ground truth": {}}
    for strong in STRONG_VARIANTS[1:]:
        variant = params.model_copy(update={"method": ["st"], "strong_aug": strong})
        r = demo.run(variant, out, f"quality-segmentation-seed{seed}-st-{strong}")
        result["pseudo"][strong] = float(r["metrics"]["st"][metric])
    labeled, val, teacher = (
        ref(report["artifacts"]["labeled"]),
        ref(report["artifacts"]["val"]),
        ref(report["artifacts"]["teacher"]),
    )
    st = store.manifest(ref(report["artifacts"]["st"])).meta
    shards = list({r.key: r for r in map(ref, report["pseudo_shards"])}.values())  # the st student's
    lab = params.labeled
    classes = store.manifest(labeled).meta["classes"]
    truth = ground_truth_shards(
        store, shards, params.unlabeled_gt, len(classes), lab.seg_map_suffix, lab.label_map or None
    )
    thresholds = choose_thresholds(params.store, labeled, truth, rule="fixed", default=params.threshold_of("st"))
    for strong in STRONG_VARIANTS:
        student = train_model(
            params.store,
            params.config,
            labeled,
            val,
            role="student",
            iters=params.student_iters,
            k=params.k,
            seed=seed,
            aug="weak",
            pretrained=params.pretrained,
            pseudo=truth,
            method="st",
            thresholds=thresholds,
            teacher_iters=int(store.manifest(teacher).meta["iters"]),
            strong_aug=strong,
        )
        meta = store.manifest(student).meta
        if (meta["iters"], meta["pseudo_labels"]["images"]) != (st["iters"], st["pseudo_labels"]["images"]):
            raise RuntimeError(
                f"the ground-truth student ({meta['iters']} iterations, {meta['pseudo_labels']['images']} images) "
                f"differs from the st student ({st['iters']}, {st['pseudo_labels']['images']})"
            )
        metrics = store.read_json(evaluate(params.store, params.config, student, val), "metrics.json")
        result["ground truth"][strong] = float(metrics[metric])
    return result


def ground_truth_shards(
    store, shards: list, gt_dir: str, num_classes: int, suffix: str = ".png", label_map: dict | None = None
) -> list:
    """Mask shards holding the ground truth of the images of the pseudo-mask ``shards``, in
    their format (every pixel kept, confidence 1), one per shard: the oracle of
    ``--st-ablation``. An image's ground truth is ``gt_dir``/<its name without extension> +
    ``suffix`` with ``label_map`` applied (read once, by registration's reader, as the report's
    pseudo-label quality reads it); images the teacher skipped are left out. Stored once per
    image shard and content (the masks' digest is in the key). Raises FileNotFoundError naming
    an image without ground truth, ValueError naming an image whose mask fails registration's
    check of a label map (selftrain/registration.py read_label_map and check_label_values: one channel, the
    image's size, values - after ``label_map`` - that are class indices 0 .. ``num_classes`` - 1
    or 255)."""
    import numpy as np

    from selftrain.diagnostics import apply_label_map
    from selftrain.kinds import KINDS
    from selftrain.pseudo_sets import mask_stats
    from selftrain.registration import check_label_values, read_label_map
    from storage.listing import read_url
    from storage.masks import quantize_confidence
    from storage.schemas import IMAGE_OK, SEG_IMAGE_STATS, UNLABELED_IMAGES, read_parquet

    kind = KINDS["segmentation"]
    out = []
    for shard in shards:
        images_ref = store.ref(shard.dataset, *store.manifest(shard).meta["shard"].split("/"))
        ok = {  # the images the teacher labeled, with their (height, width)
            s["image_id"]: (s["height"], s["width"])
            for s in read_parquet(store.read(shard, "stats.parquet"), SEG_IMAGE_STATS).to_pylist()
            if s["status"] == IMAGE_OK
        }
        images = read_parquet(store.read(images_ref, "images.parquet"), UNLABELED_IMAGES).to_pylist()
        labels, stats = [], []
        content = hashlib.sha256()
        for image in (i for i in images if i["image_id"] in ok):
            stem = image["image_id"].rsplit(".", 1)[0]
            url = posixpath.join(gt_dir.rstrip("/"), stem + suffix)
            try:
                raw = read_url(url)
            except FileNotFoundError:
                raise FileNotFoundError(f"no ground-truth mask for {image['image_uri']} under {gt_dir}") from None
            h, w = ok[image["image_id"]]
            # registration's check of a label map (one channel, the image's size, class values);
            # its DatasetError is a ValueError naming the file
            gt = read_label_map(raw, url)
            check_label_values(gt, f"{url} (of {image['image_uri']})", num_classes, (w, h), label_map)
            label = apply_label_map(gt, label_map).astype(np.uint8)
            content.update(image["image_id"].encode() + repr(label.shape).encode() + label.tobytes())
            confidence = np.ones(label.shape, dtype=np.float32)
            labels.append((image["image_id"], label, quantize_confidence(confidence)))
            stats.append(mask_stats(image, label, confidence, ""))
        # keyed by what it holds: another ground truth, suffix or label map is another shard
        params = {"oracle": "ground-truth masks", "masks": content.hexdigest()}
        ref = store.stage_ref(
            shard.dataset, kind.pseudo_stage, kind.pseudo_version, "ground-truth", {"shard": images_ref}, params
        )
        if not store.has(ref):
            meta = {"num_images": len(labels), "skipped": [], "all_skipped": False, "num_masks": len(labels)}
            meta |= {"model": f"ground truth: {gt_dir}", "shard": f"{images_ref.stage}/{images_ref.key}"}
            with store.writer(ref, meta=meta) as w:
                for name, data in kind.shard_files(labels, stats).items():
                    w.write_bytes(name, data)
        out.append(ref)
    return out


def paired(a: list[float], b: list[float]) -> dict:
    """Paired comparison of a against b (same seeds): mean and SD of a - b, wins (a > b), and the
    one-sided p-values of "a is better" by Student's paired t-test and the exact Wilcoxon
    signed-rank test (scipy.stats; NaN with fewer than 2 pairs or no spread)."""
    from scipy import stats

    d = [x - y for x, y in zip(a, b, strict=True)]
    out = {
        "mean": statistics.mean(d),
        "sd": statistics.stdev(d) if len(d) > 1 else math.nan,
        "wins": sum(x > 0 for x in d),
        "n": len(d),
        "t_p": math.nan,
        "wilcoxon_p": math.nan,
    }
    if len(d) > 1 and any(x != d[0] for x in d):
        out["t_p"] = float(stats.ttest_rel(a, b, alternative="greater").pvalue)
    if len(d) > 1 and any(x != 0 for x in d):
        out["wilcoxon_p"] = float(stats.wilcoxon(a, b, alternative="greater", method="exact").pvalue)
    return out


def table(rows: list[dict], task: str, methods: list[str]) -> str:
    """The markdown table of every seed and the paired comparisons."""
    metric = rows[0]["metric"]
    it = rows[0]["iters"]
    strong = rows[0].get("strong_aug", "strong")
    labeled = f"{rows[0]['num_labeled']} labeled images; " if rows[0].get("num_labeled") else ""
    lines = [
        f"{task}: {metric} on the held-out split, {len(rows)} seeds; {labeled}teacher {it['teacher']} it; "
        + ", ".join(f"{m} student and its control {it[m]} it" for m in methods)
        + (f"; the students' strong augmentation {strong!r}" if strong != "strong" and set(methods) - {"zoph"} else ""),
        "",
        "| seed | teacher | " + " | ".join(f"{m} | {m} control" for m in methods) + " |",
        "| --- " * (2 + 2 * len(methods)) + "|",
    ]
    for r in rows:
        cells = [f"{r['teacher']:.4f}"] + [f"{r['students'][m]:.4f} | {r['controls'][m]:.4f}" for m in methods]
        lines.append(f"| {r['seed']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| comparison | mean difference | SD | wins | paired t-test p (one-sided) | Wilcoxon p (one-sided) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    col = {"teacher": [r["teacher"] for r in rows]}
    for m in methods:
        col[m] = [r["students"][m] for r in rows]
        col[f"{m} control"] = [r["controls"][m] for r in rows]
    pairs = [(m, f"{m} control") for m in methods] + [(m, "teacher") for m in methods]
    if {"st", "st++"} <= set(methods):
        pairs.append(("st++", "st"))
    for a, b in pairs:
        s = paired(col[a], col[b])
        lines.append(
            f"| {a} - {b} | {s['mean']:+.4f} | {s['sd']:.4f} | {s['wins']}/{s['n']} | {s['t_p']:.3f} "
            f"| {s['wilcoxon_p']:.3f} |"
        )
    on_pool = [r for r in rows if r.get("pool")]
    if on_pool:
        names = ["teacher"] + [n for m in methods for n in (m, f"{m} control")]
        lines += [
            "",
            f"The same models on the unlabeled images' own ground truth ({metric}; never used in training): "
            "how well the teacher labels the pool, and what learning from its pseudo labels did on those images",
            "",
            "| seed | " + " | ".join(names) + " |",
            "| --- " * (1 + len(names)) + "|",
        ]
        for r in on_pool:
            lines.append(f"| {r['seed']} | " + " | ".join(f"{r['pool'][n]:.4f}" for n in names) + " |")
        lines += ["", "| comparison on the pool | mean difference | SD | wins | paired t-test p (one-sided) |"]
        lines.append("| --- | --- | --- | --- | --- |")
        for m in methods:
            for other in (f"{m} control", "teacher"):
                s = paired([r["pool"][m] for r in on_pool], [r["pool"][other] for r in on_pool])
                lines.append(
                    f"| {m} - {other} | {s['mean']:+.4f} | {s['sd']:.4f} | {s['wins']}/{s['n']} | {s['t_p']:.3f} |"
                )
    checked = [r for r in rows if r.get("validations")]
    if checked:
        lines += [
            "",
            f"{metric} of each training's own validations at its K evenly spaced checkpoints (the last is the "
            "reported value; a fall shows overfitting)",
            "",
            "| seed | training | iterations | validations |",
            "| --- | --- | --- | --- |",
        ]
        for r in checked:
            for name, values in r["validations"].items():
                iters = r["iters"].get(name.removesuffix(" control"), "")
                lines.append(f"| {r['seed']} | {name} | {iters} | " + ", ".join(f"{v:.4f}" for v in values) + " |")
    done = [r for r in rows if "alpha4" in r]
    if done:
        lines += [
            "",
            f"Zoph et al. at alpha = 4 (Appendix B): {metric} of the student with loss normalisation and with "
            "the plain weighted loss Lh + 4 Lp",
            "",
            "| seed | normalised | plain |",
            "| --- | --- | --- |",
        ]
        for r in done:
            cells = [
                f"{v['value']:.4f}" if v["value"] is not None else f"failed: {v['error']}"
                for v in (r["alpha4"]["normalised"], r["alpha4"]["plain"])
            ]
            lines.append(f"| {r['seed']} | " + " | ".join(cells) + " |")
        both = [r for r in done if all(v["value"] is not None for v in r["alpha4"].values())]
        if both:
            s = paired(
                [r["alpha4"]["normalised"]["value"] for r in both], [r["alpha4"]["plain"]["value"] for r in both]
            )
            lines.append(
                f"\nnormalised - plain: {s['mean']:+.4f} (SD {s['sd']:.4f}), {s['wins']}/{s['n']} seeds, "
                f"paired t-test p {s['t_p']:.3f}, Wilcoxon p {s['wilcoxon_p']:.3f} (one-sided)"
            )
    ablated = [r for r in rows if "st_ablation" in r]
    if ablated:
        lines += [
            "",
            f"ST students by labels and strong augmentation of the pseudo-labeled images ({metric}; the "
            "ground truth in place of the pseudo masks is an oracle)",
            "",
            "| seed | control | "
            + " | ".join(f"{labels}, {strong}" for labels in ("pseudo", "ground truth") for strong in STRONG_VARIANTS)
            + " |",
            "| --- " * (2 + 2 * len(STRONG_VARIANTS)) + "|",
        ]
        for r in ablated:
            cells = [
                f"{r['st_ablation'][labels][strong]:.4f}"
                for labels in ("pseudo", "ground truth")
                for strong in STRONG_VARIANTS
            ]
            lines.append(f"| {r['seed']} | {r['controls']['st']:.4f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
