"""Rendering a self-training report: the markdown, pseudo-label summaries and overlay images.
No store access: tasks/write_report.py gathers the data and writes the files."""

from __future__ import annotations

import io
import re

import numpy as np

from storage.schemas import ImageStatus

NUM_OVERLAYS = 4


PALETTE = np.array(
    [
        [0, 0, 0],
        [230, 25, 75],
        [60, 180, 75],
        [255, 225, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [210, 245, 60],
    ],
    dtype=np.uint8,
)


def _open_rgb(image_uri: str):
    """The image as the models saw it (mmcv / OpenCV decoding: EXIF orientation applied,
    16-bit, grayscale and CMYK as 8-bit colour), as an RGB PIL image, so pseudo labels
    overlay the pixels they were predicted on."""
    from PIL import Image

    from selftrain.registration import decode_as_training
    from storage.listing import read_url

    bgr = decode_as_training(read_url(image_uri))
    return Image.fromarray(np.ascontiguousarray(bgr[..., ::-1]))


def _png(img) -> bytes:
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def overlay_png(
    image_uri: str,
    boxes: list[dict],
    names: dict[int, str] | None = None,
    truth: tuple[list, list] | None = None,
    below: list[dict] | tuple = (),
) -> bytes:
    """The image with its pseudo boxes (red, 2 px), each labelled '<class> <score>', and the
    stored boxes ``below`` their threshold (thin, grey, score only); with ``truth``
    (ground-truth boxes x1y1x2y2 and category ids) a second panel beside it draws those
    (green), so a person judges the pseudo labels against them."""
    from PIL import Image, ImageDraw

    names = names or {}
    img = _open_rgb(image_uri)
    panels = [img.copy()] + ([img.copy()] if truth is not None else [])
    draw = ImageDraw.Draw(panels[0])
    for b in below:
        draw.rectangle([b["x1"], b["y1"], b["x2"], b["y2"]], outline=(160, 160, 160), width=1)
        draw.text((b["x1"] + 2, b["y2"] + 1), f"{b['score']:.2f}", fill=(160, 160, 160))
    for b in sorted(boxes, key=lambda b: b["score"]):  # the most confident drawn last, on top
        draw.rectangle([b["x1"], b["y1"], b["x2"], b["y2"]], outline=(255, 40, 40), width=2)
        draw.text(
            (b["x1"] + 2, max(0.0, b["y1"] - 11)),
            f"{names.get(b['label'], b['label'])} {b['score']:.2f}",
            fill=(255, 40, 40),
        )
    if truth is not None:
        gt = ImageDraw.Draw(panels[1])
        for (x1, y1, x2, y2), label in zip(*truth, strict=True):
            gt.rectangle([x1, y1, x2, y2], outline=(40, 220, 40), width=2)
            gt.text((x1 + 2, max(0.0, y1 - 11)), str(names.get(label, label)), fill=(40, 220, 40))
        gt.text((3, 3), "ground truth", fill=(40, 220, 40))
    draw.text((3, 3), "pseudo labels", fill=(255, 40, 40))
    out = Image.new("RGB", (img.width * len(panels), img.height))
    for i, p in enumerate(panels):
        out.paste(p, (i * img.width, 0))
    return _png(out)


def mask_overlay_png(image_uri: str, mask: np.ndarray, truth: np.ndarray | None = None) -> bytes:
    """The image, beside it blended with its pseudo mask (class colours; ignored pixels
    white) and, with ``truth`` (the ground-truth label map, same shape), blended with that."""
    from PIL import Image

    img = np.asarray(_open_rgb(image_uri), dtype=np.float32)

    def blend(labels: np.ndarray) -> np.ndarray:
        colours = PALETTE[labels % len(PALETTE)].astype(np.float32)
        colours[labels == 255] = 255
        mixed = np.where((labels > 0)[..., None], 0.35 * img + 0.65 * colours, 0.6 * img + 0.4 * colours)
        return mixed.astype(np.uint8)

    panels = [img.astype(np.uint8), blend(mask)]
    if truth is not None and truth.shape == mask.shape:
        panels.append(blend(truth))
    return _png(Image.fromarray(np.concatenate(panels, axis=1)))


def pseudo_summary(stats: list[dict]) -> dict:
    """The counts every kind's pseudo-label summary starts with: images, skipped and why."""
    ok = [s for s in stats if s["status"] == ImageStatus.OK]
    return {
        "images": len(stats),
        "skipped": len(stats) - len(ok),
        "skipped_images": [
            {"image_id": s["image_id"], "reason": s["error"]} for s in stats if s["status"] != ImageStatus.OK
        ],
    }


def label_stats_png(stats: dict) -> bytes:
    """A picture of the pseudo labels: counts per class (boxes, or pixels for masks) beside
    the histogram of scores / confidences (``stats``: a PseudoSet.label_stats result)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2), dpi=100)
    names, values = list(stats["per_class"]), list(stats["per_class"].values())
    left.barh(names[::-1], values[::-1], color="#4c72b0", label="kept")
    below = stats.get("below_threshold") or {}
    if below:
        left.barh(
            names[::-1], [below.get(n, 0) for n in names[::-1]], left=values[::-1], color="#c8c8c8", label="below"
        )
        left.legend(fontsize=8)
    left.set_title(f"{stats.get('unit', 'boxes')} per class", fontsize=10)
    h = stats["histogram"]
    edges = h["edges"]
    right.bar(edges[:-1], h["counts"], width=[b - a for a, b in zip(edges[:-1], edges[1:], strict=True)], align="edge")
    right.set_title(h["of"], fontsize=10)
    right.set_xlim(0, 1)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    plt.close(fig)
    return out.getvalue()


def threshold_text(report: dict) -> str:
    """The thresholds the report's pseudo labels are shown with, in words."""
    chosen = report.get("thresholds")
    if chosen:
        from selftrain.pseudo_labels import Thresholds

        return Thresholds.from_json(chosen).describe()
    return str(report["parameters"].get("score_threshold"))  # reports written before thresholds were chosen


def fmt(v, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def markdown(report: dict) -> str:
    from selftrain.kinds import KINDS

    kind = KINDS[report["task"]]
    cols = kind.report_columns
    lines = [
        "# Self-training report",
        "",
        f"Dataset `{report['dataset']}`, task {report['task']}, method `{report['method']}`.",
        "",
        "| model | " + " | ".join(h for _, h in cols) + " |",
        "| --- " * (len(cols) + 1) + "|",
    ]
    for name, m in report["metrics"].items():
        lines.append(f"| {name} | " + " | ".join(fmt(m.get(k), 4) for k, _ in cols) + " |")
    p = report["pseudo_labels"]
    lines += ["", "## Pseudo labels (first teacher)", ""]
    lines.append(kind.describe_pseudo(p, threshold_text(report)))
    stats = report.get("label_stats")
    if stats:
        unit = stats.get("unit", "boxes")
        below, thr = stats.get("below_threshold") or {}, stats.get("thresholds") or {}
        lines += ["", f"| class | {unit} kept | below the threshold | threshold |", "| --- | --- | --- | --- |"]
        lines += [
            f"| {name} | {n} | {below.get(name, '-')} | {fmt(thr.get(name))} |"
            for name, n in stats["per_class"].items()
        ]
        lines += [
            "",
            f"Images without a pseudo label: {stats['images_without_labels']}."
            + (
                f" (e.g. {', '.join(f'`{i}`' for i in stats['images_without_labels_sample'][:5])})"
                if stats["images_without_labels_sample"]
                else ""
            ),
            "",
            "![pseudo labels per class and their scores](labels.png)",
        ]
    q = report.get("pseudo_quality")
    if q:
        keys = [k for k in q if k != "images"]
        lines += [
            "",
            "Pseudo labels kept, against the unlabeled images' ground truth (a diagnostic; the ground "
            "truth is never used in training):",
            "",
            "| images | " + " | ".join(keys) + " |",
            "| --- " * (len(keys) + 1) + "|",
            f"| {q['images']} | " + " | ".join(fmt(q[k]) for k in keys) + " |",
        ]
    students = report.get("students") or {}
    if students:
        lines += [
            "",
            "## What each student trained on",
            "",
            "| student | pseudo-labeled images | labels kept | thresholds |",
            "| --- | --- | --- | --- |",
        ]
        for name, held in students.items():
            chosen = held.get("thresholds") or {}
            rule = chosen.get("rule", "fixed")
            values = ", ".join(f"{c} {v:.3f}" for c, v in (chosen.get("per_class") or {}).items())
            lines.append(
                f"| {name} | {held.get('images')} | {held.get('labels')} {held.get('unit', '')} | "
                f"{rule}, default {fmt(chosen.get('default'))}{'; ' + values if values else ''} |"
            )
    lines.append("")
    for s in p["skipped_images"]:
        lines.append(f"- skipped `{s['image_id']}`: {s['reason']}")
    r = report.get("ranking")
    if r:
        lines += [
            "",
            "## Stability ranking (st++)",
            "",
            f"{r['reliable']} reliable / {r['unreliable']} unreliable images (top {r['reliable_fraction']}); "
            f"mean stability {fmt(r['mean_stability']['reliable'])} vs {fmt(r['mean_stability']['unreliable'])}.",
        ]
        q = r.get("quality")
        if q:
            keys = [k for k in next(iter(q.values())) if k != "images"]
            lines += [
                "",
                "Pseudo-label quality against the unlabeled images' ground truth (diagnostic only):",
                "",
                "| group | images | " + " | ".join(keys) + " |",
                "| --- " * (len(keys) + 2) + "|",
            ]
            for group, v in q.items():
                lines.append(f"| {group} | {v['images']} | " + " | ".join(fmt(v[k]) for k in keys) + " |")
    lines += [
        "",
        "## Overlays (pseudo labels: class and score; the ground truth beside them where the run names it)",
        "",
    ]
    lines += [f"![{o['image_id']}]({o['file']})" for o in report["overlays"]]
    lines += ["", "## Artifacts", ""] + [f"- {k}: `{v}`" for k, v in report["artifacts"].items()]
    return "\n".join(lines) + "\n"


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
