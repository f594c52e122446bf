"""Evaluate a trained model on a held-out set: COCO bbox mAP (mmdet CocoMetric, pycocotools) for
detection, mIoU (mmseg IoUMetric) for segmentation (docs/design.md §2.5)."""

from __future__ import annotations

import json
import os
import time

from prefect import task
from prefect.cache_policies import NO_CACHE

from selftrain.mm.configs import config_digest, det_test_config, load_config, seg_test_config
from selftrain.mm.progress import quiet_openmmlab
from selftrain.stage import fetch_checkpoint, get_store, is_segmentation, local_coco, local_seg, log_stage, scratch_dir
from storage.store import ArtifactRef

STAGE, VERSION = "eval", 1
METRICS = ("bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "bbox_mAP_s", "bbox_mAP_m", "bbox_mAP_l")
SEG_METRICS = ("mIoU", "mAcc", "aAcc")


@task(name="evaluate", cache_policy=NO_CACHE, log_prints=False)  # pycocotools' prints go to the stage's log file
def evaluate(
    store_url: str, model_config: str, model: ArtifactRef, test: ArtifactRef, checkpoint: str = "last"
) -> ArtifactRef:
    from mmengine.runner import Runner, load_checkpoint

    from selftrain.mm.loss_normalization import REVISE_KEYS

    store = get_store(store_url)
    segmentation = is_segmentation(test)
    cfg = load_config(model_config, "seg" if segmentation else "det")
    ref = store.stage_ref(
        model.dataset, STAGE, VERSION, config_digest(cfg), {"model": model, "test": test}, {"checkpoint": checkpoint}
    )
    if store.has(ref):
        log_stage("evaluate", ref, reused=True)
        return ref
    started = time.monotonic()
    work = scratch_dir(ref)
    ckpt = fetch_checkpoint(store, model, checkpoint, os.path.join(work, "model.pth"))
    if segmentation:
        test_cfg = seg_test_config(cfg, work_dir=work, test=local_seg(store, test, work, "test"))
    else:
        test_cfg = det_test_config(cfg, work_dir=work, test=local_coco(store, test, work, "test"))
    test_cfg.experiment_name = f"eval-{ref.key[:8]}-{os.getpid()}"
    test_cfg.visualizer.name = f"vis-{test_cfg.experiment_name}"
    with quiet_openmmlab(work, test_cfg.experiment_name, "evaluate"):
        runner = Runner.from_cfg(test_cfg)
        load_checkpoint(runner.model, ckpt, map_location="cpu", revise_keys=REVISE_KEYS, logger="silent")
        raw = runner.test()
    if segmentation:
        # IoUMetric reports percentages; stored as fractions like the COCO metrics.
        metrics = {name: float(raw[name]) / 100.0 for name in SEG_METRICS if name in raw}
    else:
        metrics = {name: float(raw[f"coco/{name}"]) for name in METRICS if f"coco/{name}" in raw}
        if not metrics:
            # CocoMetric returns nothing when the model detected nothing on the whole set:
            # its precision at every recall is 0, so every AP is 0.
            metrics = {name: 0.0 for name in METRICS}
    store.write(
        ref,
        {"metrics.json": json.dumps(metrics, indent=1).encode()},
        meta={"metrics": metrics, "checkpoint": checkpoint},
    )
    main = "mIoU" if segmentation else "bbox_mAP"
    log_stage("evaluate", ref, reused=False, started=started, detail=f"{main} {metrics.get(main, float('nan')):.4f}")
    return ref
