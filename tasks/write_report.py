"""Write the run's report: metrics of teacher and students, parameters, artifact locations,
pseudo-label statistics, overlays of pseudo labels on sample images and, for st++, the
ranking with the quality of reliable vs unreliable pseudo labels where ground truth for the
unlabeled images exists (a diagnostic only); publish it as Prefect artifacts too."""

from __future__ import annotations

import io
import json
import re
from typing import Any

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from selftrain.stage import get_store, log_stage, read_pseudo_boxes, read_pseudo_masks
from storage.schemas import RANKING, read_parquet
from storage.store import ArtifactRef, ArtifactStore
from tasks.shard_images import ShardPlan

STAGE, VERSION = "report", 2
NUM_OVERLAYS = 4
# Metric columns of the report per task: (key in metrics.json, header).
COLUMNS = {"detection": [("bbox_mAP", "bbox mAP"), ("bbox_mAP_50", "mAP50"), ("bbox_mAP_75", "mAP75")],
           "segmentation": [("mIoU", "mIoU"), ("mAcc", "mAcc"), ("aAcc", "aAcc")]}
PALETTE = np.array([[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                    [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60]], dtype=np.uint8)


def _open_rgb(image_uri: str):
    """The image as the models saw it (mmcv / OpenCV decoding: EXIF orientation applied,
    16-bit, grayscale and CMYK as 8-bit colour), as an RGB PIL image, so pseudo labels
    overlay the pixels they were predicted on."""
    import fsspec
    import mmcv
    from PIL import Image

    with fsspec.open(image_uri, "rb") as f:
        bgr = mmcv.imfrombytes(f.read(), flag="color", backend="cv2")
    return Image.fromarray(np.ascontiguousarray(bgr[..., ::-1]))


def _png(img) -> bytes:
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def overlay_png(image_uri: str, boxes: list[dict]) -> bytes:
    from PIL import ImageDraw

    img = _open_rgb(image_uri)
    draw = ImageDraw.Draw(img)
    for b in boxes:
        draw.rectangle([b["x1"], b["y1"], b["x2"], b["y2"]], outline=(255, 40, 40), width=2)
    return _png(img)


def mask_overlay_png(image_uri: str, mask: np.ndarray) -> bytes:
    """The image beside it blended with its pseudo mask (class colours; ignored pixels white)."""
    from PIL import Image

    img = np.asarray(_open_rgb(image_uri), dtype=np.float32)
    colours = PALETTE[mask % len(PALETTE)].astype(np.float32)
    colours[mask == 255] = 255
    blend = np.where((mask > 0)[..., None], 0.35 * img + 0.65 * colours, 0.6 * img + 0.4 * colours).astype(np.uint8)
    return _png(Image.fromarray(np.concatenate([img.astype(np.uint8), blend], axis=1)))


def pseudo_summary(stats: list[dict], boxes: list[dict] | None) -> dict:
    ok = [s for s in stats if s["status"] == "ok"]
    summary = {"images": len(stats), "skipped": len(stats) - len(ok),
               "skipped_images": [{"image_id": s["image_id"], "reason": s["error"]}
                                  for s in stats if s["status"] != "ok"]}
    if boxes is not None:
        summary.update(boxes=len(boxes), images_with_boxes=sum(1 for s in ok if s["num_boxes"]),
                       boxes_per_image=len(boxes) / len(ok) if ok else 0.0,
                       mean_score=sum(b["score"] for b in boxes) / len(boxes) if boxes else None)
    else:
        summary.update(mean_max_prob=float(np.mean([s["mean_max_prob"] for s in ok])) if ok else None,
                       ignored_fraction=float(np.mean([s["ignored_fraction"] for s in ok])) if ok else None)
    return summary


def _fmt(v, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def markdown(report: dict) -> str:
    cols = COLUMNS[report["task"]]
    lines = ["# Self-training report", "", f"Dataset `{report['dataset']}`, task {report['task']}, "
             f"method `{report['method']}`.", "",
             "| model | " + " | ".join(h for _, h in cols) + " |", "| --- " * (len(cols) + 1) + "|"]
    for name, m in report["metrics"].items():
        lines.append(f"| {name} | " + " | ".join(_fmt(m.get(k), 4) for k, _ in cols) + " |")
    p = report["pseudo_labels"]
    lines += ["", "## Pseudo labels (first teacher)", ""]
    if report["task"] == "detection":
        lines.append(f"{p['images']} unlabeled images, {p['skipped']} skipped, {p['boxes']} boxes kept "
                     f"({p['boxes_per_image']:.2f} per image, mean score {_fmt(p['mean_score'])}), "
                     f"threshold {report['parameters'].get('score_threshold')}.")
    else:
        lines.append(f"{p['images']} unlabeled images, {p['skipped']} skipped; mean max-probability "
                     f"{_fmt(p['mean_max_prob'])}, ignored pixels {_fmt(p['ignored_fraction'])} (confidence "
                     f"threshold {report['parameters'].get('score_threshold')}).")
    if "new_images" in p:
        lines.append(f"{p['new_images']} of them were new in this run ({p['shards'] - p['reused_shards']} new "
                     f"shards, {p['reused_shards']} reused untouched).")
    lines.append("")
    for s in p["skipped_images"]:
        lines.append(f"- skipped `{s['image_id']}`: {s['reason']}")
    r = report.get("ranking")
    if r:
        lines += ["", "## Stability ranking (st++)", "",
                  f"{r['reliable']} reliable / {r['unreliable']} unreliable images (top {r['reliable_fraction']}); "
                  f"mean stability {_fmt(r['mean_stability']['reliable'])} vs {_fmt(r['mean_stability']['unreliable'])}."]
        q = r.get("quality")
        if q:
            keys = [k for k in next(iter(q.values())) if k != "images"]
            lines += ["", "Pseudo-label quality against the unlabeled images' ground truth (diagnostic only):", "",
                      "| group | images | " + " | ".join(keys) + " |", "| --- " * (len(keys) + 2) + "|"]
            for group, v in q.items():
                lines.append(f"| {group} | {v['images']} | " + " | ".join(_fmt(v[k]) for k in keys) + " |")
    lines += ["", "## Overlays (pseudo labels)", ""]
    lines += [f"![{o['image_id']}]({o['file']})" for o in report["overlays"]]
    lines += ["", "## Artifacts", ""] + [f"- {k}: `{v}`" for k, v in report["artifacts"].items()]
    return "\n".join(lines) + "\n"


def _ranking_section(store: ArtifactStore, ranking: ArtifactRef, task: str, classes: list[str],
                     boxes: list[dict] | None, masks: dict[str, np.ndarray] | None, unlabeled_gt: str | None,
                     seg_map_suffix: str, label_map: dict | None = None) -> dict:
    from selftrain import diagnostics

    rows = read_parquet(store.read(ranking, "ranking.parquet"), RANKING).to_pylist()
    groups = {"reliable": [r["image_id"] for r in rows if r["reliable"]],
              "unreliable": [r["image_id"] for r in rows if not r["reliable"]]}
    stab = {g: float(np.mean([r["stability"] for r in rows if r["reliable"] == (g == "reliable")]))
            if ids else None for g, ids in groups.items()}
    section = {"reliable": len(groups["reliable"]), "unreliable": len(groups["unreliable"]),
               "reliable_fraction": store.manifest(ranking).meta["reliable_fraction"], "mean_stability": stab,
               "uri": ranking.uri}
    if unlabeled_gt:
        if task == "detection":
            pseudo: dict[str, tuple[list, list]] = {}
            for b in boxes:
                entry = pseudo.setdefault(b["image_id"], ([], []))
                entry[0].append([b["x1"], b["y1"], b["x2"], b["y2"]])
                entry[1].append(b["label"])
            gt = diagnostics.load_gt_boxes(unlabeled_gt, {r["image_id"] for r in rows})
            section["quality"] = {g: diagnostics.det_quality(pseudo, gt, ids) for g, ids in groups.items()}
        else:
            section["quality"] = {}
            for g, ids in groups.items():
                pairs = [(masks[i], m) for i in ids if i in masks and (m := diagnostics.load_gt_mask(
                    unlabeled_gt, i, seg_map_suffix, label_map)) is not None and m.shape == masks[i].shape]
                section["quality"][g] = diagnostics.seg_quality(pairs, len(classes))
    return section


@task(name="write_report", cache_policy=NO_CACHE)
def write_report(store_url: str, dataset: str, method: str, parameters: dict[str, Any],
                 evaluations: dict[str, ArtifactRef], pseudo: list[ArtifactRef],
                 artifacts: dict[str, ArtifactRef], ranking: ArtifactRef | None = None,
                 plan: ShardPlan | None = None) -> ArtifactRef:
    store = get_store(store_url)
    inputs = {f"eval_{k}": v for k, v in evaluations.items()}
    inputs.update({f"art_{k}": v for k, v in artifacts.items()})
    if ranking is not None:
        inputs["ranking"] = ranking
    ref = store.stage_ref(dataset, STAGE, VERSION, "", inputs,
                          {"method": method, "parameters": parameters,
                           "pseudo": [f"{r.stage}/{r.key}" for r in pseudo]})
    reused = store.has(ref)
    if not reused:
        task_name = parameters.get("task", "detection")
        classes = store.manifest(artifacts["labelled"]).meta["classes"]
        metrics = {name: store.read_json(r, "metrics.json") for name, r in evaluations.items()}
        boxes, masks = None, None
        if task_name == "detection":
            boxes, stats = read_pseudo_boxes(store, pseudo)
        else:
            mask_iter, stats = read_pseudo_masks(store, pseudo)
            masks = dict(mask_iter)
        summary = pseudo_summary(stats, boxes)
        if plan is not None:
            summary.update(new_images=plan.new_images, reused_shards=plan.reused_shards, shards=len(plan.shards))
        ok = [s for s in stats if s["status"] == "ok"]
        report = {"dataset": dataset, "task": task_name, "method": method, "parameters": parameters,
                  "metrics": metrics, "pseudo_labels": summary,
                  "artifacts": {**{name: r.uri for name, r in artifacts.items()},
                                **{f"{name} eval": r.uri for name, r in evaluations.items()}},
                  "overlays": []}
        if ranking is not None:
            report["ranking"] = _ranking_section(store, ranking, task_name, classes, boxes, masks,
                                                 parameters.get("unlabeled_gt"),
                                                 (parameters.get("labelled") or {}).get("seg_map_suffix", ".png"),
                                                 (parameters.get("labelled") or {}).get("label_map") or {})
        files = {}
        if boxes is not None:
            by_image: dict[str, list[dict]] = {}
            for b in boxes:
                by_image.setdefault(b["image_id"], []).append(b)
            samples = sorted(ok, key=lambda s: (-(s["num_boxes"] or 0), s["image_id"]))[:NUM_OVERLAYS]
        else:
            # spread over the confidence range: the best, the worst and between
            ranked = sorted(ok, key=lambda s: (s["ignored_fraction"], s["image_id"]))
            picks = sorted({round(i * (len(ranked) - 1) / max(1, NUM_OVERLAYS - 1)) for i in range(NUM_OVERLAYS)})
            samples = [ranked[i] for i in picks] if ranked else []
        for i, s in enumerate(samples):
            name = f"overlay-{i}.png"
            if boxes is not None:
                files[name] = overlay_png(s["image_uri"], by_image.get(s["image_id"], []))
            else:
                files[name] = mask_overlay_png(s["image_uri"], masks[s["image_id"]])
            report["overlays"].append({"image_id": s["image_id"], "file": name})
        files["report.json"] = json.dumps(report, indent=1).encode()
        files["report.md"] = markdown(report).encode()
        store.write(ref, files, meta={"metrics": metrics})
    log_stage("write report", ref, reused)
    publish(store, ref)
    return ref


def thumbnail_data_uri(png: bytes, width: int = 384) -> str:
    import base64

    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB")
    if img.width > width:
        img = img.resize((width, max(1, round(img.height * width / img.width))))
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode()


def artifact_prefix(dataset: str) -> str:
    """The Prefect artifact keys' prefix of a dataset: '<dataset>-self-training' with the
    characters keys may not hold ('_', '.') as '-'; artifacts of two datasets never share a key."""
    return re.sub(r"[^a-z0-9-]", "-", dataset.lower()) + "-self-training"


def publish(store: ArtifactStore, ref: ArtifactRef) -> None:
    """Show the report in the Prefect UI (markdown + metrics table), linking the store."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    report = store.read_json(ref, "report.json")
    md = markdown(report)
    for o in report["overlays"]:
        # inline thumbnails: the UI cannot fetch local paths or private buckets
        md = md.replace(f"]({o['file']})", f"]({thumbnail_data_uri(store.read(ref, o['file']))})")
    prefix = artifact_prefix(report["dataset"])
    create_markdown_artifact(key=f"{prefix}-report", markdown=md + f"\nStored at `{ref.uri}`.\n",
                             description=f"Self-training report for {report['dataset']}")
    rows = [{"model": name, **{k: round(v, 4) for k, v in m.items()}} for name, m in report["metrics"].items()]
    create_table_artifact(key=f"{prefix}-metrics", table=rows,
                          description="COCO bbox metrics" if report["task"] == "detection" else "mIoU metrics")
    p = {k: v for k, v in report["pseudo_labels"].items() if not isinstance(v, (list, dict))}
    create_table_artifact(key=f"{prefix}-pseudo-labels", table=[p], description="Pseudo-label statistics")
    links = [{"artifact": name, "location": uri} for name, uri in report["artifacts"].items()]
    links.append({"artifact": "report", "location": ref.uri})
    create_table_artifact(key=f"{prefix}-artifacts", table=links,
                          description="Where every artifact of this run lives in the store")
