"""Write the run's report: metrics of teacher and students, parameters, artifact keys,
pseudo-label statistics and overlays of pseudo boxes on sample images; publish it as
Prefect artifacts too."""

from __future__ import annotations

import io
import json
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from selftrain.stage import get_store, read_pseudo_boxes
from storage.store import ArtifactRef, ArtifactStore

STAGE, VERSION = "report", 1
NUM_OVERLAYS = 4


def overlay_png(image_uri: str, boxes: list[dict]) -> bytes:
    import fsspec
    from PIL import Image, ImageDraw

    with fsspec.open(image_uri, "rb") as f:
        img = Image.open(io.BytesIO(f.read())).convert("RGB")
    draw = ImageDraw.Draw(img)
    for b in boxes:
        draw.rectangle([b["x1"], b["y1"], b["x2"], b["y2"]], outline=(255, 40, 40), width=2)
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def pseudo_summary(store: ArtifactStore, pseudo: list[ArtifactRef]) -> tuple[dict, list[dict], list[dict]]:
    boxes, stats = read_pseudo_boxes(store, pseudo)
    ok = [s for s in stats if s["status"] == "ok"]
    summary = {
        "images": len(stats), "skipped": len(stats) - len(ok), "boxes": len(boxes),
        "images_with_boxes": sum(1 for s in ok if s["num_boxes"]),
        "boxes_per_image": len(boxes) / len(ok) if ok else 0.0,
        "mean_score": sum(b["score"] for b in boxes) / len(boxes) if boxes else None,
        "skipped_images": [{"image_id": s["image_id"], "reason": s["error"]} for s in stats if s["status"] != "ok"],
    }
    return summary, boxes, ok


def markdown(report: dict) -> str:
    lines = ["# Self-training report", "", f"Dataset `{report['dataset']}`, method `{report['method']}`.", "",
             "| model | bbox mAP | mAP50 | mAP75 |", "| --- | --- | --- | --- |"]
    for name, m in report["metrics"].items():
        lines.append(f"| {name} | {m.get('bbox_mAP', float('nan')):.4f} | {m.get('bbox_mAP_50', float('nan')):.4f} "
                     f"| {m.get('bbox_mAP_75', float('nan')):.4f} |")
    p = report["pseudo_labels"]
    lines += ["", "## Pseudo labels", "",
              f"{p['images']} unlabeled images, {p['skipped']} skipped, {p['boxes']} boxes kept "
              f"({p['boxes_per_image']:.2f} per image, mean score "
              f"{p['mean_score'] if p['mean_score'] is None else round(p['mean_score'], 3)}), "
              f"threshold {report['parameters'].get('score_threshold')}.", ""]
    for s in p["skipped_images"]:
        lines.append(f"- skipped `{s['image_id']}`: {s['reason']}")
    lines += ["", "## Overlays (pseudo boxes in red)", ""]
    lines += [f"![{o['image_id']}]({o['file']})" for o in report["overlays"]]
    lines += ["", "## Artifacts", ""] + [f"- {k}: `{v}`" for k, v in report["artifacts"].items()]
    return "\n".join(lines) + "\n"


@task(name="write_report", cache_policy=NO_CACHE)
def write_report(store_url: str, dataset: str, method: str, parameters: dict[str, Any],
                 evaluations: dict[str, ArtifactRef], pseudo: list[ArtifactRef],
                 artifacts: dict[str, ArtifactRef]) -> ArtifactRef:
    store = get_store(store_url)
    inputs = {f"eval_{k}": v for k, v in evaluations.items()}
    inputs.update({f"art_{k}": v for k, v in artifacts.items()})
    ref = store.stage_ref(dataset, STAGE, VERSION, "", inputs,
                          {"method": method, "parameters": parameters,
                           "pseudo": [f"{r.stage}/{r.key}" for r in pseudo]})
    if not store.has(ref):
        metrics = {name: store.read_json(r, "metrics.json") for name, r in evaluations.items()}
        summary, boxes, ok = pseudo_summary(store, pseudo)
        by_image: dict[str, list[dict]] = {}
        for b in boxes:
            by_image.setdefault(b["image_id"], []).append(b)
        samples = sorted(ok, key=lambda s: (-(s["num_boxes"] or 0), s["image_id"]))[:NUM_OVERLAYS]
        report = {"dataset": dataset, "method": method, "parameters": parameters, "metrics": metrics,
                  "pseudo_labels": summary,
                  "artifacts": {**{name: r.uri for name, r in artifacts.items()},
                                **{f"{name}_eval": r.uri for name, r in evaluations.items()}},
                  "overlays": []}
        files = {}
        for i, s in enumerate(samples):
            name = f"overlay-{i}.png"
            files[name] = overlay_png(s["image_uri"], by_image.get(s["image_id"], []))
            report["overlays"].append({"image_id": s["image_id"], "file": name, "boxes": s["num_boxes"]})
        files["report.json"] = json.dumps(report, indent=1).encode()
        files["report.md"] = markdown(report).encode()
        store.write(ref, files, meta={"metrics": metrics})
    publish(store, ref)
    return ref


def publish(store: ArtifactStore, ref: ArtifactRef) -> None:
    """Show the report in the Prefect UI (markdown + metrics table), linking the store."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    report = store.read_json(ref, "report.json")
    md = markdown(report)
    for o in report["overlays"]:
        md = md.replace(f"]({o['file']})", f"]({store.file_url(ref, o['file'])})")
    create_markdown_artifact(key="self-training-report", markdown=md + f"\nStored at `{ref.uri}`.\n",
                             description=f"Self-training report for {report['dataset']}")
    rows = [{"model": name, **{k: round(v, 4) for k, v in m.items()}} for name, m in report["metrics"].items()]
    create_table_artifact(key="self-training-metrics", table=rows, description="COCO bbox metrics")
