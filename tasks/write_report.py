"""Write the run's report: metrics of teacher and students, parameters, artifact locations,
pseudo-label statistics, the kept pseudo labels' quality where ground truth for the unlabeled
images exists (a diagnostic only), overlays of pseudo labels on sample images and, for st++, the
ranking with the quality of reliable vs unreliable pseudo labels where ground truth for the
unlabeled images exists (a diagnostic only); publish it as Prefect artifacts too."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from selftrain.kinds import KINDS
from selftrain.pseudo_labels import Thresholds
from selftrain.pseudo_sets import PseudoSet
from selftrain.report import (
    NUM_OVERLAYS,
    artifact_prefix,
    label_stats_png,
    markdown,
    pseudo_summary,
    thumbnail_data_uri,
)
from selftrain.stage import done_or_claimed, expect, get_store, log_stage, stage_task
from storage.schemas import RANKING, read_parquet
from storage.store import ArtifactRef, ArtifactStore

# 3: no facts of the run that wrote it; 4: label statistics; 5: overlays; 6: thresholds after inference;
# 7: mask quality leaves out (and counts) ground-truth values that are no class and masks of another size;
# 8: the kept pseudo labels' quality against the unlabeled images' ground truth, for every method
STAGE, VERSION = "report", 8


def _ranking_section(
    store: ArtifactStore, ranking: ArtifactRef, pseudo: PseudoSet, parameters: dict, num_classes: int
) -> dict:
    """The report's ST++ section: reliable / unreliable counts, their mean stability and, where
    the unlabeled images' ground truth is given, their pseudo labels' quality (a diagnostic)."""
    rows = read_parquet(store.read(ranking, "ranking.parquet"), RANKING).to_pylist()
    groups = {
        "reliable": [r["image_id"] for r in rows if r["reliable"]],
        "unreliable": [r["image_id"] for r in rows if not r["reliable"]],
    }
    stab = {
        g: float(np.mean([r["stability"] for r in rows if r["reliable"] == (g == "reliable")])) if ids else None
        for g, ids in groups.items()
    }
    section = {
        "reliable": len(groups["reliable"]),
        "unreliable": len(groups["unreliable"]),
        "reliable_fraction": store.manifest(ranking).meta["reliable_fraction"],
        "mean_stability": stab,
        "uri": ranking.uri,
    }
    if parameters.get("unlabeled_gt"):
        section["quality"] = pseudo.quality(groups, parameters["unlabeled_gt"], parameters, num_classes)
    return section


@stage_task("write_report")
def write_report(
    store_url: str,
    dataset: str,
    method: str,
    parameters: dict[str, Any],
    evaluations: dict[str, ArtifactRef],
    pseudo: list[ArtifactRef],
    artifacts: dict[str, ArtifactRef],
    ranking: ArtifactRef | None = None,
    thresholds: ArtifactRef | None = None,
) -> ArtifactRef:
    """Write the report (metrics, pseudo labels, thresholds, ranking, overlays) and show it in the UI."""
    expect("write_report", "evaluations", list(evaluations.values()), "evaluation")
    expect("write_report", "pseudo", pseudo, "pseudo labels")
    expect("write_report", "ranking", ranking, "ranking")
    expect("write_report", "thresholds", thresholds, "thresholds")
    store = get_store(store_url)
    inputs = {f"eval_{k}": v for k, v in evaluations.items()}
    inputs.update({f"art_{k}": v for k, v in artifacts.items()})
    if ranking is not None:
        inputs["ranking"] = ranking
    if thresholds is not None:
        inputs["thresholds"] = thresholds
    ref = store.stage_ref(
        dataset,
        STAGE,
        VERSION,
        "",
        inputs,
        {"method": method, "parameters": parameters, "pseudo": [f"{r.stage}/{r.key}" for r in pseudo]},
    )
    reused = done_or_claimed(store, ref, "write report")
    if not reused:
        task_name = parameters.get("task", "detection")
        kind = KINDS[task_name]
        labeled_meta = store.manifest(artifacts["labeled"]).meta
        classes = labeled_meta["classes"]
        metrics = {name: store.read_json(r, "metrics.json") for name, r in evaluations.items()}
        shown = store.read_json(thresholds, "thresholds.json") if thresholds is not None else None
        chosen = Thresholds.from_json(shown) if shown is not None else None
        # masks are read one at a time, by their index; the thresholds applied as a student applies them
        labels = kind.open_pseudo(store, pseudo, labeled_meta, chosen)
        summary = pseudo_summary(labels.stats) | labels.summary()
        summary["shards"] = len(pseudo)
        report = {
            "dataset": dataset,
            "task": task_name,
            "method": method,
            "parameters": parameters,
            "metrics": metrics,
            "pseudo_labels": summary,
            "artifacts": {
                **{name: r.uri for name, r in artifacts.items()},
                **{f"{name} eval": r.uri for name, r in evaluations.items()},
            },
            "overlays": [],
            "label_stats": labels.label_stats(labeled_meta),  # streamed from the shards' Parquet files
            "pseudo_shards": [r.uri for r in pseudo],
            "thresholds": shown,  # those of the first method's student, applied to the labels above
            "students": {  # what each student trained on (its manifest): images, labels kept, thresholds
                name: r_meta["pseudo_labels"]
                for name, r in artifacts.items()
                if "pseudo_labels" in (r_meta := store.manifest(r).meta)
            },
            "uri": ref.uri,  # where this report lies in the store (`selftrain labels` / `export` take it)
        }
        if parameters.get("unlabeled_gt"):  # a diagnostic: what the students are taught, against the truth
            ids = [s["image_id"] for s in labels.ok]
            report["pseudo_quality"] = labels.quality(
                {"all": ids}, parameters["unlabeled_gt"], parameters, len(classes)
            )["all"]
        if ranking is not None:
            report["ranking"] = _ranking_section(store, ranking, labels, parameters, len(classes))
        files = {"labels.png": label_stats_png(report["label_stats"])}
        samples = labels.samples(NUM_OVERLAYS)
        for i, (s, png) in enumerate(zip(samples, labels.overlays(samples, labeled_meta, parameters), strict=True)):
            name = f"overlay-{i}.png"
            files[name] = png
            report["overlays"].append({"image_id": s["image_id"], "file": name})
        labels.close()
        files["report.json"] = json.dumps(report, indent=1).encode()
        files["report.md"] = markdown(report).encode()
        store.write(ref, files, meta={"metrics": metrics})
    log_stage("write report", ref, reused)
    publish(store, ref)
    return ref


def publish(store: ArtifactStore, ref: ArtifactRef) -> None:
    """Show the report in the Prefect UI (markdown + metrics table), linking the store."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    report = store.read_json(ref, "report.json")
    md = markdown(report)
    for o in report["overlays"]:
        # inline thumbnails: the UI cannot fetch local paths or private buckets
        md = md.replace(f"]({o['file']})", f"]({thumbnail_data_uri(store.read(ref, o['file']))})")
    if "labels.png" in store.manifest(ref).files:
        md = md.replace("](labels.png)", f"]({thumbnail_data_uri(store.read(ref, 'labels.png'), width=900)})")
    prefix = artifact_prefix(report["dataset"])
    create_markdown_artifact(
        key=f"{prefix}-report",
        markdown=md + f"\nStored at `{ref.uri}`.\n",
        description=f"Self-training report for {report['dataset']}",
    )
    rows = [{"model": name, **{k: round(v, 4) for k, v in m.items()}} for name, m in report["metrics"].items()]
    create_table_artifact(
        key=f"{prefix}-metrics",
        table=rows,
        description=KINDS[report["task"]].metrics_description,
    )
    p = {k: v for k, v in report["pseudo_labels"].items() if not isinstance(v, (list, dict))}
    create_table_artifact(key=f"{prefix}-pseudo-labels", table=[p], description="Pseudo-label statistics")
    links = [{"artifact": name, "location": uri} for name, uri in report["artifacts"].items()]
    links.append({"artifact": "report", "location": ref.uri})
    create_table_artifact(
        key=f"{prefix}-artifacts", table=links, description="Where every artifact of this run lives in the store"
    )
