"""Checkpoint-stability scores and the reliable/unreliable split (ST++, docs/design.md §3.3).

ST++ (Yang et al. 2022) ranks unlabeled images by how much the teacher's predictions agree
across its K checkpoints f_1..f_K, the last one playing ground truth:

    s_i = sum_{j<K} meanIoU(M_ij, M_iK)

- segmentation: M_ij is the label map of checkpoint j (single scale, as the reference code);
  the mean is over classes present in either map; a class absent from both is skipped, a
  class in only one counts IoU 0; pixels with the ignore label in either map are left out.
  Two maps with no class at all (all ignored) agree: 1.
- detection (an extension no public code has): the score of checkpoint j is the F1 of a
  class-aware one-to-one matching at IoU >= 0.5 between its score-thresholded boxes and
  those of f_K; two empty sets agree (1).

Reliable = the top fraction (default 0.5) by s_i; ties broken by image id.
Pure numpy; no model code.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from storage.masks import IGNORE_LABEL

MATCH_IOU = 0.5


def mask_mean_iou(pred: np.ndarray, ref: np.ndarray, ignore: int = IGNORE_LABEL) -> float:
    """meanIoU of one label map against a reference map (docs/design.md §3.3 rules)."""
    pred, ref = np.asarray(pred), np.asarray(ref)
    if pred.shape != ref.shape:
        raise ValueError(f"label maps differ in shape: {pred.shape} vs {ref.shape}")
    valid = (pred != ignore) & (ref != ignore)
    p, r = pred[valid], ref[valid]
    classes = np.union1d(np.unique(p), np.unique(r))
    if classes.size == 0:
        return 1.0
    ious = []
    for c in classes:
        inter = np.count_nonzero((p == c) & (r == c))
        union = np.count_nonzero((p == c) | (r == c))
        ious.append(inter / union)  # union > 0: c is present in one of them
    return float(np.mean(ious))


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of (N, 4) and (M, 4) boxes in x1, y1, x2, y2."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def matches(
    pred: Sequence, pred_labels: Sequence[int], ref: Sequence, ref_labels: Sequence[int], iou_thr: float = MATCH_IOU
) -> int:
    """Number of class-aware one-to-one matches of ``pred`` to ``ref`` at IoU >= iou_thr,
    greedy by IoU (highest pairs first), each box matched at most once."""
    p = np.asarray(pred, dtype=np.float64).reshape(-1, 4)
    r = np.asarray(ref, dtype=np.float64).reshape(-1, 4)
    pl, rl = np.asarray(pred_labels).reshape(-1), np.asarray(ref_labels).reshape(-1)
    if len(p) != len(pl) or len(r) != len(rl):
        raise ValueError("each box needs exactly one label")
    if not len(p) or not len(r):
        return 0
    iou = box_iou(p, r)
    iou[pl[:, None] != rl[None, :]] = 0.0
    pairs = sorted(((iou[i, j], i, j) for i, j in zip(*np.nonzero(iou >= iou_thr))), key=lambda t: (-t[0], t[1], t[2]))
    used_p, used_r, tp = set(), set(), 0
    for _, i, j in pairs:
        if i not in used_p and j not in used_r:
            used_p.add(i)
            used_r.add(j)
            tp += 1
    return tp


def box_f1(
    pred: Sequence, pred_labels: Sequence[int], ref: Sequence, ref_labels: Sequence[int], iou_thr: float = MATCH_IOU
) -> float:
    """F1 of the class-aware one-to-one matching of ``pred`` to ``ref`` (``matches``).
    Both sets empty: 1.0 (they agree); one empty: 0.0."""
    n_pred, n_ref = len(pred_labels), len(ref_labels)
    if not n_pred and not n_ref:
        return 1.0
    return 2.0 * matches(pred, pred_labels, ref, ref_labels, iou_thr) / (n_pred + n_ref)


def seg_stability(maps: Sequence[np.ndarray]) -> float:
    """s_i for one image from its K label maps (checkpoint order; the last is the reference)."""
    if len(maps) < 2:
        raise ValueError("stability needs the predictions of at least 2 checkpoints")
    return float(sum(mask_mean_iou(m, maps[-1]) for m in maps[:-1]))


def det_stability(boxes: Sequence[tuple[Sequence, Sequence[int]]], iou_thr: float = MATCH_IOU) -> float:
    """s_i for one image from its K (boxes, labels) sets (thresholded; the last is the reference)."""
    if len(boxes) < 2:
        raise ValueError("stability needs the predictions of at least 2 checkpoints")
    ref, ref_labels = boxes[-1]
    return float(sum(box_f1(b, lab, ref, ref_labels, iou_thr) for b, lab in boxes[:-1]))


def rank(scores: dict[str, float], reliable_fraction: float = 0.5) -> list[dict]:
    """Rows (image_id, stability, rank, reliable), most stable first, ties by image id.

    The reliable set is the first floor(fraction * N) images, as the ST++ reference code
    takes ``id_to_reliability[:len(id_to_reliability) // 2]`` (main.py ``select_reliable``):
    a fraction of 0.5 of 5 images marks 2 reliable. At least one when N > 0 and fraction > 0
    (the reference would keep none of a single image, and phase 1 would have no pseudo label).
    Raises ValueError for a fraction outside [0, 1] or a non-finite score.
    """
    if not 0.0 <= reliable_fraction <= 1.0:
        raise ValueError(f"reliable_fraction must be in [0, 1], got {reliable_fraction}")
    bad = [i for i, s in scores.items() if not math.isfinite(s)]
    if bad:
        raise ValueError(f"non-finite stability score for {bad[:5]}")
    order = sorted(scores, key=lambda i: (-scores[i], i))
    n_reliable = math.floor(reliable_fraction * len(order))
    if reliable_fraction > 0 and order:
        n_reliable = max(1, n_reliable)
    return [
        {"image_id": i, "stability": float(scores[i]), "rank": r, "reliable": r < n_reliable}
        for r, i in enumerate(order)
    ]
