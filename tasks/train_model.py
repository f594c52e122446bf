"""Train a detector with mmengine's Runner: a teacher, or a Zoph et al. student.

Keeps K evenly spaced checkpoints (ckpt-1.pth .. ckpt-K.pth, the last being the end of the
schedule) plus best.pth (best validation bbox mAP), DESIGN 2.1. A killed run resumes from
its last checkpoint: the scratch folder is keyed by the stage key, so the re-run finds it.
"""

from __future__ import annotations

import glob
import json
import os
import re

from prefect import task
from prefect.cache_policies import NO_CACHE

from selftrain.mm.configs import CocoSource, config_digest, det_train_config, load_config
from selftrain.stage import get_store, read_pseudo_boxes, scratch_dir
from storage.keys import digest_json
from storage.store import ArtifactRef, ArtifactStore

STAGE, VERSION = "train", 1


def fetch_checkpoint(store: ArtifactStore, model: ArtifactRef, which: str, path: str) -> str:
    """A trained model's checkpoint as a local file: which = 'last', 'best' or 'ckpt-<j>'."""
    meta = store.manifest(model).meta
    name = meta["last"] if which == "last" else "best.pth" if which == "best" else f"{which}.pth"
    if which == "best" and not meta.get("best"):
        name = meta["last"]  # trained without a validation set
    return store.get_file(model, name, path)


def local_coco(store: ArtifactStore, ref: ArtifactRef, folder: str, name: str) -> CocoSource:
    """A registered COCO set as a local annotation file + its image root."""
    meta = store.manifest(ref).meta
    path = store.get_file(ref, "coco.json", os.path.join(folder, f"{name}.json"))
    return CocoSource(ann_file=path, image_root=meta["image_root"], classes=tuple(meta["classes"]))


def pseudo_coco(store: ArtifactStore, pseudo: list[ArtifactRef], labelled: CocoSource, path: str) -> CocoSource:
    """Materialise pseudo-box shards as one COCO file (image file_name = the image's URI)."""
    with open(labelled.ann_file) as f:
        categories = json.load(f)["categories"]
    boxes, stats = read_pseudo_boxes(store, pseudo)
    images, annotations, ids = [], [], {}
    for s in stats:
        if s["status"] != "ok":
            continue
        ids[s["image_id"]] = len(images) + 1
        images.append({"id": len(images) + 1, "file_name": s["image_uri"], "width": s["width"],
                       "height": s["height"]})
    for b in boxes:
        w, h = b["x2"] - b["x1"], b["y2"] - b["y1"]
        annotations.append({"id": len(annotations) + 1, "image_id": ids[b["image_id"]],
                            "category_id": b["label"], "bbox": [b["x1"], b["y1"], w, h], "area": w * h,
                            "iscrowd": 0, "score": b["score"]})
    if not annotations:
        raise ValueError(f"no pseudo boxes to train a student on: the teacher kept no box on any of "
                         f"{len(images)} unlabeled images; lower score_threshold or train the teacher longer")
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    return CocoSource(ann_file=path, image_root="", classes=labelled.classes)


@task(name="train_model", cache_policy=NO_CACHE)
def train_model(store_url: str, model_config: str, labelled: ArtifactRef, val: ArtifactRef | None, *,
                role: str, iters: int, k: int, seed: int, aug: str = "S1", pretrained: bool = True,
                init: ArtifactRef | None = None, pseudo: list[ArtifactRef] | None = None,
                alpha: float = 1.0) -> ArtifactRef:
    """role 'teacher': labelled data only. role 'student': labelled + pseudo (half/half batches),
    loss normalisation with weight alpha, initialised from ``init`` (the teacher) or randomly."""
    from mmengine.runner import Runner

    store = get_store(store_url)
    cfg = load_config(model_config)
    inputs = {"labelled": labelled}
    if val is not None:
        inputs["val"] = val
    if init is not None:
        inputs["init"] = init
    if pseudo:
        inputs["pseudo"] = digest_json([f"{r.stage}/{r.key}" for r in pseudo])
    params = {"role": role, "iters": iters, "k": k, "seed": seed, "aug": aug.lower(), "pretrained": pretrained,
              "alpha": alpha if pseudo else None}
    ref = store.stage_ref(labelled.dataset, STAGE, VERSION, config_digest(cfg), inputs, params)
    if store.has(ref):
        return ref

    work = scratch_dir(ref)
    data = os.path.join(work, "data")
    os.makedirs(data, exist_ok=True)
    lab = local_coco(store, labelled, data, "labelled")
    val_src = local_coco(store, val, data, "val") if val is not None else None
    pseudo_src = pseudo_coco(store, pseudo, lab, os.path.join(data, "pseudo.json")) if pseudo else None
    load_from = None
    if init is not None:
        load_from = fetch_checkpoint(store, init, "last", os.path.join(data, "init.pth"))

    train_cfg = det_train_config(cfg, work_dir=work, labelled=lab, val=val_src, iters=iters, k=k, seed=seed,
                                 aug=aug, pretrained=pretrained, load_from=load_from, pseudo=pseudo_src,
                                 alpha=alpha)
    if os.path.exists(os.path.join(work, "last_checkpoint")):
        # A previous attempt was killed: continue from its last checkpoint, not from scratch.
        train_cfg.resume, train_cfg.load_from = True, None
    train_cfg.experiment_name = f"{role}-{ref.key[:8]}-{os.getpid()}"
    train_cfg.visualizer.name = f"vis-{train_cfg.experiment_name}"
    runner = Runner.from_cfg(train_cfg)
    runner.train()

    interval = iters // k
    ckpts = [os.path.join(work, f"iter_{j * interval}.pth") for j in range(1, k + 1)]
    missing = [c for c in ckpts if not os.path.exists(c)]
    if missing:
        raise RuntimeError(f"training finished but checkpoints are missing: {missing}")
    best = sorted(glob.glob(os.path.join(work, "best_*.pth")))
    history = _scalars(work)
    meta = {"role": role, "params": params, "model_config": model_config, "checkpoints": k,
            "last": f"ckpt-{k}.pth",
            "best": os.path.basename(best[-1]) if best else None,
            "final_val": history[-1] if history and "coco/bbox_mAP" in history[-1] else None}
    with store.writer(ref, meta=meta) as w:
        for j, path in enumerate(ckpts, start=1):
            w.put_file(f"ckpt-{j}.pth", path)
        if best:
            w.put_file("best.pth", best[-1])
        w.write_json("history.json", history)
    return ref


def _scalars(work: str) -> list[dict]:
    """The Runner's logged scalars (loss, lr, validation metrics) of the latest attempt."""
    files = sorted(glob.glob(os.path.join(work, "*", "vis_data", "scalars.json")),
                   key=lambda p: re.sub(r"\D", "", p))
    if not files:
        return []
    with open(files[-1]) as f:
        return [json.loads(line) for line in f if line.strip()]
