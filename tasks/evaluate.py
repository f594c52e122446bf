"""Evaluate a trained detector on a held-out COCO set with mmdet's CocoMetric (pycocotools)."""

from __future__ import annotations

import json
import os

from prefect import task
from prefect.cache_policies import NO_CACHE

from selftrain.mm.configs import config_digest, det_test_config, load_config
from selftrain.stage import get_store, scratch_dir
from storage.store import ArtifactRef
from tasks.train_model import fetch_checkpoint, local_coco

STAGE, VERSION = "eval", 1
METRICS = ("bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "bbox_mAP_s", "bbox_mAP_m", "bbox_mAP_l")


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate(store_url: str, model_config: str, model: ArtifactRef, test: ArtifactRef,
             checkpoint: str = "last") -> ArtifactRef:
    from mmengine.runner import Runner, load_checkpoint

    from selftrain.mm.loss_normalization import REVISE_KEYS

    store = get_store(store_url)
    cfg = load_config(model_config)
    ref = store.stage_ref(model.dataset, STAGE, VERSION, config_digest(cfg), {"model": model, "test": test},
                          {"checkpoint": checkpoint})
    if store.has(ref):
        return ref
    work = scratch_dir(ref)
    source = local_coco(store, test, work, "test")
    ckpt = fetch_checkpoint(store, model, checkpoint, os.path.join(work, "model.pth"))
    test_cfg = det_test_config(cfg, work_dir=work, test=source)
    test_cfg.experiment_name = f"eval-{ref.key[:8]}-{os.getpid()}"
    test_cfg.visualizer.name = f"vis-{test_cfg.experiment_name}"
    runner = Runner.from_cfg(test_cfg)
    load_checkpoint(runner.model, ckpt, map_location="cpu", revise_keys=REVISE_KEYS, logger="silent")
    raw = runner.test()
    metrics = {name: float(raw[f"coco/{name}"]) for name in METRICS if f"coco/{name}" in raw}
    store.write(ref, {"metrics.json": json.dumps(metrics, indent=1).encode()},
                meta={"metrics": metrics, "checkpoint": checkpoint})
    return ref
