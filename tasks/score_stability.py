"""Score one shard's images by checkpoint stability (ST++, docs/design.md §3.3).

Every one of the teacher's K checkpoints predicts every image at a single scale (as the
ST++ reference does); each image is read and decoded once for all K (the K checkpoints are
held as K models; selftrain.mm.inference.predict_each); s_i compares checkpoints 1..K-1 with the last one (selftrain/
stability.py): meanIoU of label maps for segmentation, F1 of the score-thresholded boxes
for detection. Unreadable images get no score (they have no pseudo labels either); a shard
whose every image is unreadable is reported as pseudo_label_shard reports it.
"""

from __future__ import annotations

import os
import time

from selftrain.inference_settings import inference_settings, with_smaller_batches
from selftrain.kinds import kind_of
from selftrain.mm.configs import config_digest
from selftrain.pseudo_labels import check_all_skipped
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
from storage.schemas import STABILITY, UNLABELED_IMAGES, read_parquet, table_from_rows, to_parquet_bytes
from storage.store import ArtifactRef

STAGE, VERSION = "stability", 1


@stage_task("score_stability")
def score_stability(
    store_url: str,
    model_config: str,
    teacher: ArtifactRef,
    shard: ArtifactRef,
    labeled: ArtifactRef,
    *,
    score_thr: float,
    class_thresholds: dict[str, float] | None = None,
    batch_size: int | str = "auto",
    precision: str = "fp32",
) -> ArtifactRef:
    """Score the stability of each image of ``shard`` across the teacher's K checkpoints (ST++, docs/design.md §3.3).

    ``batch_size``: images per batch, or 'auto' (the device's measured choice for K models,
    with its worker count: selftrain/inference_settings.py); ``precision``: 'fp32' or 'amp'
    (the network under autocast; in the key when 'amp')."""
    from selftrain.mm.calibrate import measure_settings
    from selftrain.mm.inference import build_model, predict_each

    expect("score_stability", "teacher", teacher, "model")
    expect("score_stability", "shard", shard, "shard")
    expect("score_stability", "labeled", labeled, "registered set")
    store = get_store(store_url)
    kind = kind_of(labeled)
    cfg = kind.load_config(model_config)
    classes = store.manifest(labeled).meta["classes"]
    class_thr = {classes.index(n): float(t) for n, t in (class_thresholds or {}).items()}
    params: dict[str, object] = {
        "score_thr": float(score_thr) if kind.thresholded_stability else None,
        "class_thresholds": {k: float(v) for k, v in sorted((class_thresholds or {}).items())},
    }
    if precision != "fp32":
        params["precision"] = precision
    ref = store.stage_ref(
        shard.dataset,
        STAGE,
        VERSION,
        config_digest(cfg),
        {"model": teacher, "shard": shard, LABELED_INPUT: labeled},
        params,
    )
    if done_or_claimed(store, ref, "score stability"):
        log_stage("score stability", ref, reused=True)
        return ref
    started = time.monotonic()

    k = int(store.manifest(teacher).meta["checkpoints"])
    if k < 2:
        raise ValueError(f"stability ranking needs at least 2 checkpoints; the teacher kept {k} (set k >= 2)")
    images = read_parquet(store.read(shard, "images.parquet"), UNLABELED_IMAGES).to_pylist()
    work = scratch_dir(ref)
    models = [
        build_model(
            kind.test_model(cfg, len(classes)),
            kind.scope,
            fetch_checkpoint(store, teacher, f"ckpt-{j}", os.path.join(work, f"ckpt-{j}.pth")),
            precision,
        )
        for j in range(1, k + 1)
    ]
    pipeline = kind.test_pipeline(cfg)
    run = inference_settings(
        store,
        shard.dataset,
        config_digest(cfg),
        {"task": "stability", "checkpoints": k, "precision": precision},
        batch_size,
        None,
        lambda: measure_settings(models, images, pipeline, scope=kind.scope, by_shape=kind.batch_by_shape),
        len(images),
    )

    def view_all(batch: int, workers: int | None) -> tuple[dict[str, list], dict[str, str]]:
        per_image: dict[str, list] = {}  # image_id -> its K views, checkpoint 1 first
        unreadable: dict[str, str] = {}  # image_id -> reason
        for image, preds in predict_each(
            models, images, pipeline, batch, workers, scope=kind.scope, by_shape=kind.batch_by_shape
        ):
            if preds[0].metainfo.get("load_error"):
                unreadable[image["image_id"]] = preds[0].metainfo["load_error"]
            else:
                per_image[image["image_id"]] = [kind.stability_view(p, score_thr, class_thr) for p in preds]
        return per_image, unreadable

    (per_image, unreadable), run = with_smaller_batches(run, view_all, f"score stability {shard.key}")
    all_skipped = check_all_skipped(
        shard.uri,
        [
            {"image_uri": im["image_uri"], "reason": unreadable[im["image_id"]]}
            for im in images
            if im["image_id"] in unreadable
        ],
        len(images),
    )
    rows = []
    for image in images:
        if image["image_id"] in unreadable:
            continue
        preds = per_image[image["image_id"]]
        s = kind.stability(preds)
        rows.append({"image_id": image["image_id"], "image_uri": image["image_uri"], "stability": s})
    store.write(
        ref,
        {"stability.parquet": to_parquet_bytes(table_from_rows(rows, STABILITY), STABILITY)},
        meta={
            "params": params,
            "checkpoints": k,
            "num_images": len(images),
            "scored": len(rows),
            "all_skipped": all_skipped,
            "inference": run.as_meta(),
        },
    )
    detail = f"{len(images)} images x {k} checkpoints ({run.describe()})"
    log_stage("score stability", ref, reused=False, started=started, detail=detail)
    return ref
