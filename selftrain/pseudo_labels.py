"""Pseudo-label logic shared by the labeling, threshold and training stages: the labeler's
identity, thresholds (fixed, or chosen from the stored scores after inference), and the
all-images-skipped rule. Pure functions over rows; no model work."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

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


def label_params(scales: list[float], flip: bool, recipe: str = "", precision: str = "fp32") -> dict:
    """The pseudo-labeling parameters in canonical form (part of every shard's key and of the
    labeler's identity). ``recipe``: the digest of the TTA defaults file (merge settings;
    selftrain.mm.configs.recipe_digest), so that editing it re-labels instead of reusing.
    ``precision``: 'fp32' or 'amp' (the network under autocast; its labels differ slightly, so
    it is part of the key - only when 'amp', so that fp32 keys are those of before).
    No threshold: a shard stores every label above the model's own floor with its score, and
    thresholds are applied when a student's set is built (:class:`Thresholds`)."""
    params = {"scales": list(map(float, scales)), "flip": bool(flip), "checkpoint": "last", "recipe": recipe}
    if precision != "fp32":
        params["precision"] = precision
    return params


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


RULES = ("fixed", "quantile", "mixture")
MIN_LABELS = 4  # fewer labels of a class than this: its adaptive threshold falls back to the default


@dataclass(frozen=True)
class Thresholds:
    """The score (boxes) or confidence (pixels) thresholds of pseudo labels, by class name.

    A label of class c is kept when its score >= ``per_class.get(c, default)`` (scores and
    confidences in [0, 1]). Applied when a student's training set is built, never at
    inference, so that another threshold re-uses every stored shard. ``rule``: how they were
    chosen ('fixed', 'quantile', 'mixture': :func:`choose_thresholds`); ``why``: per class,
    what set its value."""

    default: float
    per_class: Mapping[str, float] = field(default_factory=dict)
    rule: str = "fixed"
    why: Mapping[str, str] = field(default_factory=dict)

    def of(self, class_name: str) -> float:
        return float(self.per_class.get(class_name, self.default))

    def by_index(self, classes: Sequence[str]) -> dict[int, float]:
        """Class index -> threshold for every class of ``classes`` (a labeled set's order)."""
        return {i: self.of(c) for i, c in enumerate(classes)}

    def quantised(self, classes: Sequence[str]) -> np.ndarray:
        """(256,) uint8-confidence thresholds by label value: a pixel of label ``l`` with
        quantised confidence q (storage.masks.quantize_confidence) is kept when
        ``q >= t[l]``, i.e. ``q / 255 >= threshold``; the ignore label's entry keeps it ignored."""
        t = np.zeros(256, dtype=np.int32)
        for i, c in enumerate(classes):
            t[i] = math.ceil(self.of(c) * 255.0 - 1e-9)
        return t

    def to_json(self) -> dict:
        return {
            "rule": self.rule,
            "default": float(self.default),
            "per_class": {k: float(v) for k, v in sorted(self.per_class.items())},
            "why": dict(sorted(self.why.items())),
        }

    @classmethod
    def from_json(cls, data: Mapping) -> Thresholds:
        return cls(
            default=float(data["default"]),
            per_class={k: float(v) for k, v in (data.get("per_class") or {}).items()},
            rule=str(data.get("rule", "fixed")),
            why=dict(data.get("why") or {}),
        )

    def describe(self) -> str:
        """One line: 'fixed 0.5', or the rule with each class's value."""
        if not self.per_class:
            return f"{self.rule} {self.default:g}"
        values = ", ".join(f"{c} {v:.3f}" for c, v in sorted(self.per_class.items()))
        return f"{self.rule} (default {self.default:g}): {values}"


def apply_confidence(label: np.ndarray, confidence: np.ndarray | None, quantised: np.ndarray) -> np.ndarray:
    """A pseudo mask with the pixels below their class's threshold set to the ignore label 255.

    ``label``: (H, W) uint8 class indices; ``confidence``: (H, W) uint8 quantised confidence,
    or None for a mask stored with its threshold already applied (a version 1 shard: returned
    as it is); ``quantised``: :meth:`Thresholds.quantised`."""
    if confidence is None:
        return label
    out = label.copy()
    out[confidence.astype(np.int32) < quantised[label]] = 255
    return out


def quantile_threshold(values: np.ndarray, weights: np.ndarray | None, keep: float) -> float:
    """The score above which a ``keep`` share (in (0, 1]) of the labels lie: sorted by score,
    high first, the score of the label at which the kept weight first reaches ``keep`` of the
    total (ties kept together). ``weights``: per value (pixel counts of a histogram), or None."""
    values = np.asarray(values, dtype=np.float64)
    w = np.ones_like(values) if weights is None else np.asarray(weights, dtype=np.float64)
    order = np.argsort(-values, kind="stable")
    v, cw = values[order], np.cumsum(w[order])
    i = int(np.searchsorted(cw, keep * cw[-1] - 1e-9 * cw[-1]))
    return float(v[min(i, len(v) - 1)])


def mixture_threshold(values: np.ndarray, weights: np.ndarray | None, iterations: int = 100) -> float | None:
    """The score where a two-component 1-D Gaussian mixture fitted to the scores (weighted EM,
    initialised as Consistent Teacher's GMM: means at the lowest and highest score, equal
    weights) starts to assign labels to its high component: the lowest score whose posterior
    of the high-mean component is >= 0.5. None when no score is assigned to it (one cluster).

    (Consistent Teacher, Wang et al. 2023, §3.3, fits sklearn's GaussianMixture per class to
    the scores of a batch; here one fit per class over every stored label, with weights, so
    that a pixel-confidence histogram is one weighted sample per bin.)"""
    x = np.asarray(values, dtype=np.float64)
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=np.float64)
    x, w = x[w > 0], w[w > 0]
    if x.size == 0 or x.min() == x.max():
        return None
    mu = np.array([x.min(), x.max()])
    var = np.full(2, max(float(np.average((x - np.average(x, weights=w)) ** 2, weights=w)), 1e-6))
    pi = np.array([0.5, 0.5])
    for _ in range(iterations):
        log_p = -0.5 * ((x[:, None] - mu) ** 2 / var + np.log(2 * np.pi * var)) + np.log(pi)
        post = np.exp(log_p - log_p.max(axis=1, keepdims=True))
        post /= post.sum(axis=1, keepdims=True)
        nk = (w[:, None] * post).sum(axis=0)
        if np.any(nk <= 0):
            break
        new_mu = (w[:, None] * post * x[:, None]).sum(axis=0) / nk
        var = np.maximum((w[:, None] * post * (x[:, None] - new_mu) ** 2).sum(axis=0) / nk, 1e-6)
        pi = nk / nk.sum()
        converged = np.allclose(new_mu, mu, atol=1e-9)
        mu = new_mu
        if converged:
            break
    high = int(np.argmax(mu))
    log_p = -0.5 * ((x[:, None] - mu) ** 2 / var + np.log(2 * np.pi * var)) + np.log(pi)
    post_high = np.exp(log_p[:, high] - np.logaddexp(log_p[:, 0], log_p[:, 1]))
    assigned = x[post_high >= 0.5]
    return float(assigned.min()) if assigned.size else None


def choose_thresholds(
    scores: Mapping[str, tuple[np.ndarray, np.ndarray | None]],
    rule: str,
    default: float,
    class_thresholds: Mapping[str, float] | None = None,
    keep: float = 0.5,
) -> Thresholds:
    """Per-class thresholds chosen from the stored scores, without ground truth.

    ``scores``: class name -> (scores, weights or None) of its stored labels (boxes: one
    score each; pixels: a histogram of quantised confidences). ``rule``: 'fixed' (``default``
    for every class: the papers), 'quantile' (keep each class's top ``keep`` share:
    :func:`quantile_threshold`) or 'mixture' (:func:`mixture_threshold`). A class with fewer
    than MIN_LABELS labels (or weight), or whose mixture finds one cluster, keeps ``default``;
    ``class_thresholds`` (by class name) override any rule. Raises ValueError for an unknown
    rule or a ``keep`` outside (0, 1]."""
    if rule not in RULES:
        raise ValueError(f"threshold rule must be one of {RULES}, got {rule!r}")
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"the quantile rule keeps a share in (0, 1], got {keep}")
    per_class: dict[str, float] = {}
    why: dict[str, str] = {}
    if rule != "fixed":
        for name, (values, weights) in scores.items():
            n = float(len(values) if weights is None else np.sum(weights))
            if n < MIN_LABELS:
                why[name] = f"default: {n:g} labels (fewer than {MIN_LABELS})"
                continue
            t = quantile_threshold(values, weights, keep) if rule == "quantile" else mixture_threshold(values, weights)
            if t is None:
                why[name] = "default: the mixture found one cluster"
                continue
            per_class[name], why[name] = t, f"{rule}" + (f" (top {keep:g})" if rule == "quantile" else "")
    for name, t in (class_thresholds or {}).items():
        per_class[name], why[name] = float(t), "given"
    return Thresholds(default=float(default), per_class=per_class, rule=rule, why=why)
