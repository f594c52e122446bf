"""Merge a reviewed export of a run's pseudo labels with its labeled set, for the next run."""

from __future__ import annotations

from selftrain.kinds import kind_of
from selftrain.stage import expect, get_store, stage_logger, stage_task
from storage.store import ArtifactRef


@stage_task("import_labels")
def import_labels(
    store_url: str, labeled: ArtifactRef, unlabeled: ArtifactRef, corrections: str, fmt: str, out: str
) -> dict:
    """Merge reviewed pseudo labels (boxes or masks) with the labeled set, for the next run.

    Boxes (COCO or Label Studio JSON) become one COCO file, masks (a folder of PNG label maps)
    a set with a split file.
    ``labeled`` / ``unlabeled``: the run's registered labeled set and unlabeled listing;
    ``corrections``: the reviewed file or folder, ``fmt`` one of the kind's import formats
    ('coco', 'label-studio'; 'png'); ``out``: the merged COCO file, or a new folder. Returns
    what was merged, with ``next_labeled``, the next run's ``labeled`` parameters
    (selftrain/corrections.py, selftrain/mask_corrections.py); raises CorrectionError naming
    the item that does not fit, WrongReference for a swapped reference."""
    expect("import_labels", "labeled", labeled, "registered set")
    expect("import_labels", "unlabeled", unlabeled, "unlabeled listing")
    done = kind_of(labeled).import_corrections(get_store(store_url), labeled, unlabeled, corrections, fmt, out)
    stage_logger().info(
        "import labels: %d reviewed images + %d labeled -> next run's labeled set %s",
        done["added_images"],
        done["labeled_images"],
        done["next_labeled"],
    )
    for note in done["notes"]:
        stage_logger().warning(note)
    return done
