"""Choose the pseudo-label thresholds a student trains with, from the stored scores.

The labeling stage stores every label above the model's floor with its score (boxes) or its
8-bit confidence (pixels); this stage picks, per class, the threshold to apply - the papers'
fixed value by default, or one chosen without ground truth (a per-class score quantile, or a
two-component mixture per class in the spirit of Consistent Teacher) - and records, per class,
how many labels it keeps. It reads scores only: a new threshold costs no inference.
"""

from __future__ import annotations

import numpy as np

from selftrain.kinds import kind_of
from selftrain.pseudo_labels import Thresholds
from selftrain.pseudo_labels import choose_thresholds as choose
from selftrain.stage import LABELED_INPUT, done_or_claimed, expect, get_store, log_stage, stage_task
from storage.keys import digest_json
from storage.store import ArtifactRef

STAGE, VERSION = "thresholds", 1


def kept_counts(scores: dict, thresholds: Thresholds) -> dict[str, dict[str, int]]:
    """Per class, the number (or pixel weight) of stored labels and of those kept."""
    counts = {}
    for name, (values, weights) in scores.items():
        w = np.ones(len(values)) if weights is None else np.asarray(weights, dtype=np.float64)
        if weights is not None:  # quantised confidences: kept when q >= ceil(255 t) (Thresholds.quantised)
            kept = np.arange(256) >= thresholds.quantised([name])[0]
        else:
            kept = np.asarray(values) >= thresholds.of(name)
        counts[name] = {"labels": int(w.sum()), "kept": int(w[kept].sum())}
    return counts


def read_thresholds(store_url: str, ref: ArtifactRef) -> Thresholds:
    """The thresholds a stage of this kind stored."""
    expect("read_thresholds", "thresholds", ref, "thresholds")
    return Thresholds.from_json(get_store(store_url).read_json(ref, "thresholds.json"))


@stage_task("choose_thresholds")
def choose_thresholds(
    store_url: str,
    labeled: ArtifactRef,
    pseudo: list[ArtifactRef],
    *,
    rule: str = "fixed",
    default: float,
    class_thresholds: dict[str, float] | None = None,
    keep: float = 0.5,
) -> ArtifactRef:
    """Choose per-class pseudo-label thresholds from the stored scores (no inference).

    ``rule``: 'fixed' (``default``, in [0, 1], for every class: the papers' choice), 'quantile'
    (each class keeps its top ``keep`` share of labels) or 'mixture' (per class, where a
    two-component Gaussian mixture of the scores starts its high component);
    ``class_thresholds`` (by class name) override the rule. Stores thresholds.json
    (selftrain.pseudo_labels.Thresholds, with per-class label and kept counts: boxes, or
    pixels for masks). Raises WrongReference for a swapped reference, ValueError for an
    unknown rule or class name."""
    expect("choose_thresholds", "labeled", labeled, "registered set")
    expect("choose_thresholds", "pseudo", pseudo, "pseudo labels")
    store = get_store(store_url)
    kind = kind_of(labeled)
    meta = store.manifest(labeled).meta
    unknown = sorted(set(class_thresholds or {}) - set(meta["classes"]))
    if unknown:
        raise ValueError(
            f"class_thresholds names unknown classes {unknown}; the labeled set's classes are {meta['classes']}"
        )
    params = {
        "rule": rule,
        "default": float(default),
        "class_thresholds": {k: float(v) for k, v in sorted((class_thresholds or {}).items())},
        "keep": float(keep) if rule == "quantile" else None,
    }
    ref = store.stage_ref(
        labeled.dataset,
        STAGE,
        VERSION,
        "",
        {LABELED_INPUT: labeled, "pseudo": digest_json([f"{r.stage}/{r.key}" for r in pseudo])},
        params,
    )
    if done_or_claimed(store, ref, "choose thresholds"):
        log_stage("choose thresholds", ref, reused=True)
        return ref
    labels = kind.open_pseudo(store, pseudo, meta)
    try:
        scores = labels.class_scores()
    finally:
        labels.close()
    thresholds = choose(scores, rule, default, class_thresholds, keep)
    counts = kept_counts(scores, thresholds)
    unit = "pixels" if any(w is not None for _, w in scores.values()) else kind.made
    with store.writer(ref, meta={"params": params, "thresholds": thresholds.to_json(), "counts": counts}) as w:
        w.write_json("thresholds.json", dict(thresholds.to_json(), counts=counts, unit=unit))
    kept = sum(c["kept"] for c in counts.values())
    total = sum(c["labels"] for c in counts.values())
    log_stage("choose thresholds", ref, reused=False, detail=f"{thresholds.describe()}; keeps {kept} of {total} {unit}")
    return ref
