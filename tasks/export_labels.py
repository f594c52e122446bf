"""Export a run's pseudo labels (or a selection) as COCO, Label Studio tasks or PNG label maps."""

from __future__ import annotations

from selftrain.export import export_labels as export
from selftrain.kinds import kind_of
from selftrain.pseudo_labels import Thresholds
from selftrain.stage import expect, get_store, stage_logger, stage_task
from storage.store import ArtifactRef


@stage_task("export_labels")
def export_labels(
    store_url: str,
    pseudo: list[ArtifactRef],
    labeled: ArtifactRef,
    fmt: str,
    out: str,
    *,
    ranking: ArtifactRef | None = None,
    group: str | None = None,
    lowest: int | None = None,
    class_name: str | None = None,
    image_url_prefix: str | None = None,
    thresholds: ArtifactRef | None = None,
) -> dict:
    """Export pseudo labels (all, or a selection) in a labeling tool's format.

    ``fmt``: 'coco' or 'label-studio' (boxes), 'png' (masks); ``out``: a file (a folder for
    png). Selections: ``group`` 'reliable' / 'unreliable' (with the ST++ ``ranking``), the
    ``lowest`` N images by mean score, one ``class_name`` (boxes); ``thresholds``
    (tasks/choose_thresholds.py; None: every stored label) choose the labels. Returns {format, path,
    images, labels}. Raises selftrain.export.ExportError naming what cannot be exported,
    WrongReference for a swapped reference (selftrain/export.py)."""
    expect("export_labels", "pseudo", pseudo, "pseudo labels")
    expect("export_labels", "labeled", labeled, "registered set")
    expect("export_labels", "ranking", ranking, "ranking")
    expect("export_labels", "thresholds", thresholds, "thresholds")
    store = get_store(store_url)
    chosen = Thresholds.from_json(store.read_json(thresholds, "thresholds.json")) if thresholds else None
    meta = store.manifest(labeled).meta
    labels = kind_of(labeled).open_pseudo(store, pseudo, meta, chosen)
    try:
        written = export(
            store,
            labels,
            meta,
            fmt,
            out,
            ranking=ranking,
            group=group,
            lowest=lowest,
            class_name=class_name,
            image_url_prefix=image_url_prefix,
        )
    finally:
        labels.close()
    stage_logger().info(
        "export labels: %d images, %d labels as %s -> %s", written["images"], written["labels"], fmt, out
    )
    return written
