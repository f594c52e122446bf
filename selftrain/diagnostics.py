"""Quality of pseudo labels against ground truth, where the unlabeled images have some
(benchmarks): a diagnostic for the report, never an input to training.

ST++'s claim is that the images its ranking marks reliable carry better pseudo labels; the
report shows it per group: precision / recall of pseudo boxes (class-aware one-to-one at
IoU >= 0.5, selftrain.stability.matches), or mIoU / pixel accuracy of pseudo masks over the
pixels they label (255 left out) plus the share they leave ignored.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterable

import numpy as np

from selftrain.registration import read_label_map
from selftrain.stability import matches
from storage.listing import read_url
from storage.masks import IGNORE_LABEL


def load_gt_boxes(coco_url: str, image_ids: set[str]) -> dict[str, tuple[list, list]]:
    """image_id -> (boxes x1y1x2y2, category ids) from a COCO file whose file_name ends with
    the unlabeled image id (its path under the unlabeled prefix)."""
    coco = json.loads(read_url(coco_url))
    by_name = {}
    for im in coco["images"]:
        parts = im["file_name"].split("/")
        for i in range(len(parts)):
            if "/".join(parts[i:]) in image_ids:
                by_name[im["id"]] = "/".join(parts[i:])
                break
    out: dict[str, tuple[list, list]] = {i: ([], []) for i in by_name.values()}
    for a in coco["annotations"]:
        if a["image_id"] in by_name:
            x, y, w, h = a["bbox"]
            out[by_name[a["image_id"]]][0].append([x, y, x + w, y + h])
            out[by_name[a["image_id"]]][1].append(a["category_id"])
    return out


def det_quality(pseudo: dict[str, tuple[list, list]], gt: dict[str, tuple[list, list]], ids: list[str]) -> dict:
    tp = n_pred = n_gt = 0
    used = [i for i in ids if i in gt]
    for i in used:
        pb, pl = pseudo.get(i, ([], []))
        gb, gl = gt[i]
        tp += matches(pb, pl, gb, gl)
        n_pred, n_gt = n_pred + len(pl), n_gt + len(gl)
    precision = tp / n_pred if n_pred else None
    recall = tp / n_gt if n_gt else None
    return {"images": len(used), "pseudo_boxes": n_pred, "true_boxes": n_gt, "precision": precision, "recall": recall}


def load_gt_mask(ann_dir: str, image_id: str, suffix: str, label_map: dict | None = None) -> np.ndarray | None:
    """The ground-truth label map (H, W) of an unlabeled image (None when there is none), read
    by registration's reader (selftrain.registration.read_label_map: one channel of class
    values, as mmseg reads a labeled set) with the labeled set's ``label_map`` (stored value ->
    class index) applied: int64 when a label map is given (a class index may not fit the stored
    dtype), else as stored. Values that are no class are kept: seg_quality counts them.

    Raises DatasetError (a ValueError) naming the file when it is unreadable or has more than
    one channel (a colour-coded mask: convert it to class indices, as for the labeled set)."""
    url = posixpath.join(ann_dir.rstrip("/"), image_id.rsplit(".", 1)[0] + suffix)
    try:
        raw = read_url(url)
    except FileNotFoundError:
        return None
    return apply_label_map(read_label_map(raw, url), label_map)


def apply_label_map(gt: np.ndarray, label_map: dict | None) -> np.ndarray:
    """``gt`` with ``label_map`` (stored value -> class index; keys and values may be strings,
    as JSON gives them) applied: int64 when a map is given (a class index may not fit the
    stored dtype, e.g. 1-bit or 255 -> 300), else ``gt`` itself."""
    if not label_map:
        return gt
    mapped = gt.astype(np.int64)
    for old, new in label_map.items():
        mapped[gt == int(old)] = int(new)
    return mapped


def seg_quality(pairs: Iterable[tuple[np.ndarray, np.ndarray]], num_classes: int) -> dict:
    """mIoU and pixel accuracy of pseudo masks over the pixels they label, and their ignored share.

    ``pairs``: (pseudo, ground truth) label maps (H, W), consumed one at a time; class indices
    0 .. ``num_classes`` - 1, 255 ignored. Nothing is compared silently wrong: a pair whose
    shapes differ is left out and counted (``gt_size_mismatch``: images), and ground-truth
    pixels that are neither a class nor 255 (a label map that misses a stored value) are left
    out like 255 and counted (``gt_unknown_pixels``)."""
    inter, union = np.zeros(num_classes), np.zeros(num_classes)
    correct = labeled = total = images = mismatched = unknown = 0
    for pseudo, gt in pairs:
        if pseudo.shape != gt.shape:
            mismatched += 1
            continue
        images += 1
        known = (gt >= 0) & (gt < num_classes)
        unknown += int(np.count_nonzero(~known & (gt != IGNORE_LABEL)))
        valid = (pseudo != IGNORE_LABEL) & known
        total += int(np.count_nonzero(known))
        p, g = pseudo[valid], gt[valid]
        labeled += p.size
        correct += int(np.count_nonzero(p == g))
        for c in range(num_classes):
            inter[c] += np.count_nonzero((p == c) & (g == c))
            union[c] += np.count_nonzero((p == c) | (g == c))
    present = union > 0
    return {
        "images": images,
        "mIoU": float(np.mean(inter[present] / union[present])) if present.any() else None,
        "pixel_accuracy": correct / labeled if labeled else None,
        "ignored_fraction": 1 - labeled / total if total else None,
        "gt_unknown_pixels": unknown,
        "gt_size_mismatch": mismatched,
    }
