"""Merge a reviewed export of a run's pseudo labels with its labeled set, as a COCO file."""

from __future__ import annotations

from selftrain.corrections import import_corrections
from selftrain.stage import expect, get_store, stage_logger, stage_task
from storage.store import ArtifactRef


@stage_task("import_labels")
def import_labels(
    store_url: str, labeled: ArtifactRef, unlabeled: ArtifactRef, corrections: str, fmt: str, out: str
) -> dict:
    """Merge reviewed pseudo labels (COCO or Label Studio JSON) with the labeled set into one COCO file.

    ``labeled`` / ``unlabeled``: the run's registered labeled set and unlabeled listing;
    ``corrections``: the reviewed file, ``fmt`` 'coco' or 'label-studio'; ``out``: the merged
    COCO file. Returns {ann_file, image_root, labeled_images, added_images, added_boxes,
    unreviewed, images} (selftrain/corrections.py); raises CorrectionError naming the image
    and box that do not fit, WrongReference for a swapped reference."""
    expect("import_labels", "labeled", labeled, "registered set")
    expect("import_labels", "unlabeled", unlabeled, "unlabeled listing")
    done = import_corrections(get_store(store_url), labeled, unlabeled, corrections, fmt, out)
    stage_logger().info(
        "import labels: %d reviewed images (%d boxes) + %d labeled -> %s (image_root %s)",
        done["added_images"],
        done["added_boxes"],
        done["labeled_images"],
        out,
        done["image_root"],
    )
    return done
