"""Pseudo-label logic shared by the labeling and scoring stages: the labeler's identity,
thresholds, and the all-images-skipped rule. Pure functions over rows; no model work."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from selftrain.stage import LABELED_INPUT, stage_logger
from storage.keys import digest_json
from storage.store import ArtifactRef


class AllImagesFailed(RuntimeError):
    """Every image of a shard failed with the same error, and it is not a defect of the images
    (a broken reader or set-up rather than bad data)."""


def common_reason(reason: str, image_uri: str) -> str:
    """A skip reason with the image's own URI (with or without its protocol) replaced by
    '<image>', so that the same error on different images reads the same."""
    for name in (image_uri, image_uri.split("://", 1)[-1]):
        if name:
            reason = reason.replace(name, "<image>")
    return reason


def check_all_skipped(where: str, skipped: list[dict], num_images: int) -> bool:
    """Whether all ``num_images`` images of ``where`` (a shard's URI) were skipped.

    ``skipped``: ``{"image_uri", "reason"}`` of each skipped image. When all were skipped, a
    warning naming ``where`` and the reasons (with counts) goes to the Prefect run log (the
    'selftrain' logger outside a run); when they
    share one reason (up to the image's URI) that is not an image defect
    (selftrain.mm.transforms.is_image_defect), raises AllImagesFailed.
    """
    from selftrain.mm.transforms import is_image_defect

    if num_images == 0 or len(skipped) < num_images:
        return False
    reasons = Counter(common_reason(s["reason"] or "", s["image_uri"]) for s in skipped)
    summary = "; ".join(f"{n} x {r!r}" for r, n in reasons.most_common(5))
    stage_logger().warning("every image of %s was skipped (%d of %d): %s", where, len(skipped), num_images, summary)
    if len(reasons) == 1:
        reason = next(iter(reasons))
        if not is_image_defect(reason):
            raise AllImagesFailed(
                f"every image of {where} ({num_images}) failed with the same error, which is not "
                f"a defect of the images; fix the cause and re-run: {reason}"
            )
    return True


def label_params(
    scales: list[float],
    flip: bool,
    score_thr: float,
    class_thresholds: dict[str, float] | None,
    recipe: str = "",
) -> dict:
    """The pseudo-labeling parameters in canonical form (part of every shard's key and of the
    labeler's identity). ``recipe``: the digest of the TTA defaults file (merge settings;
    selftrain.mm.configs.recipe_digest), so that editing it re-labels instead of reusing."""
    return {
        "scales": list(map(float, scales)),
        "flip": bool(flip),
        "score_thr": float(score_thr),
        "class_thresholds": {k: float(v) for k, v in sorted((class_thresholds or {}).items())},
        "checkpoint": "last",
        "recipe": recipe,
    }


def labeler_key(model: ArtifactRef, labeled: ArtifactRef, params: dict) -> str:
    """Who labels and how: the same for every shard a model labels with the same parameters.
    New unlabeled images are sharded apart from those that already have labels under this key
    (docs/design.md §4.5), so new data costs only new shards."""
    return digest_json(
        {"model": f"{model.stage}/{model.key}", LABELED_INPUT: f"{labeled.stage}/{labeled.key}", "params": params}
    )


def threshold_boxes(bboxes, scores, labels, default_thr: float, class_thr: Mapping[int, float]):
    """Indices of the boxes to keep: score >= the threshold of their class (hard threshold)."""
    keep = []
    for i, (s, c) in enumerate(zip(scores, labels)):
        if s >= class_thr.get(int(c), default_thr):
            keep.append(i)
    return keep
