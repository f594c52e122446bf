"""Evaluate a trained model on a held-out set: COCO bbox mAP (mmdet CocoMetric, pycocotools) for
detection, mIoU (mmseg IoUMetric) for segmentation (docs/design.md §2.5)."""

from __future__ import annotations

import json
import os
import time

from selftrain.kinds import kind_of
from selftrain.mm.configs import config_digest, recipe_digest
from selftrain.mm.progress import quiet_openmmlab
from selftrain.stage import done_or_claimed, expect, fetch_checkpoint, get_store, log_stage, scratch_dir, stage_task
from storage.store import ArtifactRef

STAGE, VERSION = "eval", 1


@stage_task("evaluate", log_prints=False)  # pycocotools' prints go to the stage's log file
def evaluate(
    store_url: str, model_config: str, model: ArtifactRef, test: ArtifactRef, checkpoint: str = "last"
) -> ArtifactRef:
    """Evaluate a trained model on a held-out set: COCO bbox mAP (detection) or mIoU (segmentation).

    ``checkpoint``: 'last' (the end of the schedule, default) or 'best'. Stores metrics.json
    (fractions in [0, 1]). Raises WrongReference when ``model`` is not a model or ``test``
    not a registered set."""
    from mmengine.runner import Runner, load_checkpoint

    from selftrain.mm.loss_normalization import REVISE_KEYS

    expect("evaluate", "model", model, "model")
    expect("evaluate", "test", test, "registered set")
    store = get_store(store_url)
    kind = kind_of(test)
    cfg = kind.load_config(model_config)
    ref = store.stage_ref(
        model.dataset,
        STAGE,
        VERSION,
        config_digest(cfg),
        {"model": model, "test": test},
        {"checkpoint": checkpoint, "recipe": recipe_digest((f"{kind.config_folder}_test",))},
    )
    trained = store.manifest(model).meta
    what = f"evaluate {(trained.get('params') or {}).get('method', '')} {trained.get('role', 'model')}".replace(
        "  ", " "
    )
    if done_or_claimed(store, ref, what):
        log_stage(what, ref, reused=True)
        return ref
    started = time.monotonic()
    work = scratch_dir(ref)
    ckpt = fetch_checkpoint(store, model, checkpoint, os.path.join(work, "model.pth"))
    test_cfg = kind.test_config(cfg, work, kind.local_set(store, test, work, "test"))
    test_cfg.experiment_name = f"eval-{ref.key[:8]}-{os.getpid()}"
    test_cfg.visualizer.name = f"vis-{test_cfg.experiment_name}"
    with quiet_openmmlab(work, test_cfg.experiment_name, "evaluate"):
        runner = Runner.from_cfg(test_cfg)
        load_checkpoint(runner.model, ckpt, map_location="cpu", revise_keys=REVISE_KEYS, logger="silent")
        raw = runner.test()
    metrics = kind.metrics_from(raw)
    store.write(
        ref,
        {"metrics.json": json.dumps(metrics, indent=1).encode()},
        meta={"metrics": metrics, "checkpoint": checkpoint},
    )
    main = kind.main_metric
    log_stage(what, ref, reused=False, started=started, detail=f"{main} {metrics.get(main, float('nan')):.4f}")
    return ref
