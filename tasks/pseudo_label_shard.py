"""Pseudo-label one shard: batched multi-scale x flip TTA inference, stored with scores.

docs/design.md §3.2: the views of each image are merged as mmdet's DetTTAModel does (boxes
mapped back to the original image, NMS over the union); every box above the model's own floor
(its test_cfg.score_thr) is stored with its score, one Parquet row each, and every pixel of a
mask with its 8-bit confidence; no threshold is applied here (tasks/choose_thresholds.py and
the student's set do it), so that any threshold re-uses the shard. Every image gets a
statistics row. An image's own defect (missing, empty, undecodable, or any per-image failure of
the pipeline such as a degenerate size) is recorded as skipped with its reason and never stops
the shard; an infrastructure failure (storage unreachable, access denied, out of memory) is
retried and then fails the shard, naming the image. A shard whose every image was skipped is
logged as a warning and marked ``all_skipped`` in its manifest; when they all failed with one
error that is not an image defect, the shard fails.
"""

from __future__ import annotations

import os
import socket
import time

from selftrain.inference_settings import inference_settings, with_smaller_batches
from selftrain.kinds import kind_of
from selftrain.mm.configs import config_digest, recipe_digest
from selftrain.pseudo_labels import check_all_skipped, label_params, labeler_key
from selftrain.stage import (
    LABELED_INPUT,
    done_or_claimed,
    expect,
    fetch_checkpoint,
    get_store,
    log_stage,
    scratch_dir,
    stage_task,
)
from storage.schemas import IMAGE_OK, UNLABELED_IMAGES, read_parquet
from storage.store import ArtifactRef


@stage_task("pseudo_label_shard")
def pseudo_label_shard(
    store_url: str,
    model_config: str,
    model: ArtifactRef,
    shard: ArtifactRef,
    labeled: ArtifactRef,
    *,
    scales: list[float],
    flip: bool,
    batch_size: int | str = "auto",
    num_workers: int | None = None,
    precision: str = "fp32",
) -> ArtifactRef:
    """Pseudo-label one shard of unlabeled images with a model and test-time augmentation.

    Every box the model outputs (above its config's floor) with its score for detection; the
    argmax label map with its per-pixel confidence (8 bits) for segmentation; chosen by the
    labeled set's kind; TTA views: ``scales`` (relative to the test size) x horizontal flip.
    Stores Parquet boxes or mask shards with per-image statistics; unreadable images are
    skipped with their reason. ``batch_size``: images per batch, or 'auto' (the device's
    measured choice, with its worker count: selftrain/inference_settings.py); ``num_workers``:
    DataLoader workers (None: the measured or the device's default); ``precision``: 'fp32' or
    'amp' (the network under autocast, selftrain.mm.inference.mixed_precision; in the key).
    Raises WrongReference for a swapped reference,
    AllImagesFailed when every image failed alike for a reason that is not the images' own
    (docs/design.md §3.2)."""
    from selftrain.mm.calibrate import measure_settings
    from selftrain.mm.inference import build_model, predict

    expect("pseudo_label_shard", "model", model, "model")
    expect("pseudo_label_shard", "shard", shard, "shard")
    expect("pseudo_label_shard", "labeled", labeled, "registered set")
    store = get_store(store_url)
    kind = kind_of(labeled)
    cfg = kind.load_config(model_config)
    labeled_meta = store.manifest(labeled).meta
    classes = labeled_meta["classes"]
    params = label_params(scales, flip, recipe_digest(tta=kind.tta_defaults), precision)
    ref = store.stage_ref(
        shard.dataset,
        kind.pseudo_stage,
        kind.pseudo_version,
        config_digest(cfg),
        {"model": model, "shard": shard, LABELED_INPUT: labeled},
        params,
    )
    if done_or_claimed(store, ref, "pseudo label shard"):
        log_stage("pseudo label shard", ref, reused=True)
        return ref

    started = time.monotonic()
    images = read_parquet(store.read(shard, "images.parquet"), UNLABELED_IMAGES).to_pylist()
    ckpt = fetch_checkpoint(store, model, "last", os.path.join(scratch_dir(ref), "model.pth"))
    tta = build_model(kind.tta_model(cfg, len(classes)), kind.scope, ckpt, precision)
    pipeline = kind.tta_pipeline(cfg, scales, flip)
    run = inference_settings(
        store,
        shard.dataset,
        config_digest(cfg),
        {"task": "pseudo labels", "scales": params["scales"], "flip": params["flip"], "precision": precision},
        batch_size,
        num_workers,
        lambda: measure_settings([tta], images, pipeline, scope=kind.scope, by_shape=kind.batch_by_shape),
        len(images),
    )

    def label_all(batch: int, workers: int | None) -> tuple[list, list[dict]]:
        labels, stats = [], []
        for image, pred in predict(
            tta, images, pipeline, batch, workers, scope=kind.scope, by_shape=kind.batch_by_shape
        ):
            image_labels, stat = kind.label_image(image, pred, pred.metainfo.get("load_error", ""), labeled_meta)
            labels += image_labels
            stats.append(stat)
        return labels, stats

    (labels, stats), run = with_smaller_batches(run, label_all, f"pseudo label shard {shard.key}")
    stats.sort(key=lambda s: s["image_id"])
    skipped = [{"image_id": s["image_id"], "reason": s["error"]} for s in stats if s["status"] != IMAGE_OK]
    all_skipped = check_all_skipped(
        shard.uri,
        [{"image_uri": s["image_uri"], "reason": s["error"]} for s in stats if s["status"] != IMAGE_OK],
        len(images),
    )
    meta = {
        "params": params,
        "num_images": len(images),
        "skipped": skipped,
        "all_skipped": all_skipped,
        "model": f"{model.stage}/{model.key}",
        "shard": f"{shard.stage}/{shard.key}",
        "labeler": labeler_key(model, labeled, params),
        "inference": run.as_meta(),
        "worker": {"host": socket.gethostname(), "pid": os.getpid()},
    }
    meta[f"num_{kind.made}"] = len(labels)
    with store.writer(ref, meta=meta) as w:
        for name, data in kind.shard_files(labels, stats).items():
            w.write_bytes(name, data)
    seconds = time.monotonic() - started
    made = f"{len(labels)} {kind.made}"
    log_stage(
        "pseudo label shard",
        ref,
        reused=False,
        started=started,
        detail=f"{len(images)} images, {made}, {len(skipped)} skipped, "
        f"{len(images) / max(seconds, 1e-9):.1f} images/s ({run.describe()})",
    )
    return ref
