"""A real 2-process DDP training on CPU (torchrun, gloo) through the path SELFTRAIN_GPUS takes.

selftrain.mm.launch.train_distributed writes the DDP config and runs it under torchrun, as
train_model does when SELFTRAIN_GPUS=2; without CUDA it runs two CPU processes on gloo. The
training is a Zoph et al. segmentation student (loss normalisation) of the tiny CPU config, so
that the probe hook (tests/ddp_probe.py) can record what each rank trained on and the EMAs it
holds.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from selftrain.mm.configs import SegSource, load_config, seg_train_config
from selftrain.mm.launch import train_distributed, usable_cores
from tests.stage_log import stage_lines

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


CPU_DDP = pytest.mark.skipif(
    torch.cuda.is_available() or usable_cores() < 2,
    reason="the CPU (gloo) path, on 2 cores or more: CUDA machines take NCCL",
)


def _pairs(root, name: str, n: int) -> SegSource:
    rng = np.random.default_rng(len(name))
    pairs = []
    for i in range(n):
        img, ann = root / f"{name}{i}.png", root / f"{name}{i}_m.png"
        Image.fromarray(rng.integers(0, 255, (40 + 8 * i, 64, 3), dtype=np.uint8)).save(img)
        mask = np.zeros((40 + 8 * i, 64), np.uint8)
        mask[10:30, 20:40] = 1
        Image.fromarray(mask).save(ann)
        pairs.append({"img_path": str(img), "seg_map_path": str(ann)})
    (root / f"{name}.json").write_text(json.dumps(pairs))
    return SegSource(str(root / f"{name}.json"), ("background", "thing"))


def _rows(probe, rank: int) -> list[dict]:
    with open(probe / f"rank{rank}.jsonl") as f:
        return [json.loads(line) for line in f]


@CPU_DDP
def test_two_cpu_processes_train_on_different_data_with_the_same_emas_and_resume(tmp_path, monkeypatch):
    lab, pseudo = _pairs(tmp_path, "human", 4), _pairs(tmp_path, "pseudo", 4)
    work, probe = tmp_path / "work", tmp_path / "probe"
    cfg = seg_train_config(
        load_config("seg/deeplabv3plus_mnv2_128_cpu", "seg"),
        work_dir=str(work),
        labeled=lab,
        val=None,
        iters=4,
        k=2,
        seed=0,
        pretrained=False,
        pseudo=pseudo,
        num_pseudo=4,
        method="zoph",
        zoph_batch="split",
        num_workers=0,
    )
    # two human and two pseudo images per process and step (BatchNorm needs two): with 4 images
    # of each, a step's images on both ranks are one shuffle of the set, split between the ranks
    cfg.train_dataloader.batch_size = cfg.train_dataloader.sampler.batch_size = 4
    imports = list(cfg.get("custom_imports", {}).get("imports", []))
    cfg.custom_imports = dict(imports=[*imports, "selftrain.mm", "tests.ddp_probe"], allow_failed_imports=False)
    cfg.custom_hooks = [dict(type="DDPProbeHook", out=str(probe))]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p))
    os.makedirs(work)

    train_distributed(cfg, str(work), 2)

    ranks = [[r for r in _rows(probe, rank) if r["event"] == "iter"] for rank in (0, 1)]
    assert [r["iter"] for r in ranks[0]] == [r["iter"] for r in ranks[1]] == [0, 1, 2, 3]
    for r0, r1 in zip(*ranks):
        for branch in ("human", "pseudo"):  # each rank trained on its own slice of the data
            assert len(r0["images"][branch]) == len(r1["images"][branch]) == 2
            assert set(r0["images"][branch]).isdisjoint(r1["images"][branch]), (branch, r0, r1)
        # the EMAs are averaged across ranks before each update: both ranks hold the same values
        assert (r0["ema_human"], r0["ema_pseudo"]) == (r1["ema_human"], r1["ema_pseudo"])
        assert r0["ema_steps"] == r1["ema_steps"] == r0["iter"] + 1
        assert np.isfinite(r0["ema_human"]) and np.isfinite(r0["ema_pseudo"])
    seen = {rank: {i for r in rows for i in r["images"]["human"]} for rank, rows in enumerate(ranks)}
    assert seen[0] | seen[1] == {f"human{i}.png" for i in range(4)}
    saved = torch.load(work / "iter_4.pth", map_location="cpu", weights_only=False)["state_dict"]
    assert float(saved["ema_human"]) == ranks[0][-1]["ema_human"]
    assert int(saved["ema_steps"]) == 4

    # resume: the run stopped after its first checkpoint; the next attempt starts from it with
    # the checkpoint's EMAs on both ranks and trains the remaining iterations
    os.remove(work / "iter_4.pth")
    (work / "last_checkpoint").write_text(str(work / "iter_2.pth"))
    for f in probe.iterdir():
        f.unlink()
    cfg.resume, cfg.load_from = True, None
    train_distributed(cfg, str(work), 2)

    for rank in (0, 1):
        rows = _rows(probe, rank)
        start, iters = rows[0], [r for r in rows if r["event"] == "iter"]
        assert start["event"] == "start" and start["iter"] == 2
        assert (start["ema_human"], start["ema_pseudo"], start["ema_steps"]) == (
            ranks[rank][1]["ema_human"],
            ranks[rank][1]["ema_pseudo"],
            2,
        )
        assert [r["iter"] for r in iters] == [2, 3] and iters[-1]["ema_steps"] == 4
    assert (work / "iter_4.pth").exists()


def _tiny_set(root, task: str):
    """4 labeled images of unequal sizes: a COCO set (detection) or image / label-map folders
    (segmentation), registered as a user registers them."""
    rng = np.random.default_rng(1)
    for sub in ("img", "ann"):
        (root / sub).mkdir()
    images, annotations = [], []
    for i in range(4):
        h, w = 48 + 16 * i, 64
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / "img" / f"{i}.png")
        mask = np.zeros((h, w), np.uint8)
        mask[8:30, 10:40] = 1
        Image.fromarray(mask).save(root / "ann" / f"{i}.png")
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": w, "height": h})
        annotations.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [10, 8, 30, 22], "area": 660})
    store_url = str(root / "store")
    if task == "detection":
        from tasks.register_dataset import register_dataset

        coco = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "thing"}]}
        (root / "coco.json").write_text(json.dumps(coco))
        return store_url, register_dataset.fn(store_url, "tiny", str(root / "coco.json"), str(root / "img"), "labeled")
    from tasks.register_seg_dataset import register_seg_dataset

    labeled = register_seg_dataset.fn(
        store_url, "tiny", str(root / "img"), str(root / "ann"), ["background", "thing"], "labeled", ".png"
    )
    return store_url, labeled


@CPU_DDP
@pytest.mark.parametrize(
    "task, config", [("detection", "det/retinanet_mnv2_256_cpu"), ("segmentation", "seg/deeplabv3plus_mnv2_128_cpu")]
)
def test_train_model_with_selftrain_gpus_2_trains_on_two_processes_and_stores_what_it_ran(
    task, config, tmp_path, monkeypatch
):
    """What a user gets from SELFTRAIN_GPUS=2 on a machine without CUDA: the stage trains under
    torchrun on two gloo processes (the detector's MobileNetV2 has a layer it does not use,
    which DDP must be told about), relays rank 0's progress to the stage's log, stores its
    checkpoints and the DDP config it ran with, and keys the model by its process count."""
    from selftrain.stage import get_store
    from tasks.train_model import train_model

    store_url, labeled = _tiny_set(tmp_path, task)
    monkeypatch.setenv("SELFTRAIN_WORK_DIR", str(tmp_path / "scratch"))
    monkeypatch.setenv("SELFTRAIN_GPUS", "2")
    with stage_lines() as lines:  # the stage's log outside a flow
        ref = train_model.fn(
            store_url, config, labeled, None, role="teacher", iters=4, k=2, seed=0, pretrained=False
        )  # fmt: skip
    store = get_store(store_url)
    manifest = store.manifest(ref)
    assert {"ckpt-1.pth", "ckpt-2.pth", "config.py"} <= set(manifest.files)
    assert manifest.meta["iters"] == 4 and manifest.meta["processes"] == 2
    assert manifest.meta["params"]["processes"] == 2  # part of the key: the batch is per process
    stored = store.read(ref, "config.py").decode()  # what torchrun ran
    assert "launcher = 'pytorch'" in stored and "backend='gloo'" in stored
    assert "find_unused_parameters = True" in stored
    logged = "\n".join(lines)
    assert "train teacher: 2 processes (gloo); their OpenMMLab log in" in logged
    assert "train teacher: [####################] 4/4, loss" in logged  # rank 0's, relayed
    (processes_log,) = (tmp_path / "scratch").rglob("train_processes.log")
    assert "Iter(train) [4/4]" in processes_log.read_text()  # the ranks' OpenMMLab output, kept there

    monkeypatch.setenv("SELFTRAIN_GPUS", "1")  # one process: another model, not the 2-process one reused
    one = train_model.fn(store_url, config, labeled, None, role="teacher", iters=4, k=2, seed=0, pretrained=False)
    assert one.key != ref.key
    assert "processes" not in store.manifest(one).meta["params"]  # one-process keys are as before


@CPU_DDP
def test_a_failing_distributed_training_names_its_error_and_its_log(tmp_path):
    """A rank's exception is quoted in the stage's error, with the log holding the whole trace
    (here mmengine's refusal of a config without a training loop)."""
    from mmengine.config import Config

    cfg = Config(dict(model=dict(type="NoSuchDetector"), work_dir=str(tmp_path), train_cfg=dict(max_iters=1)))
    with pytest.raises(RuntimeError) as failure:
        train_distributed(cfg, str(tmp_path), 2, "train teacher")
    message = str(failure.value)
    assert message.startswith("train teacher: distributed training (2 processes) failed with exit code 1: ")
    assert "ValueError: train_dataloader, train_cfg, and optim_wrapper should be either all None" in message
    assert str(tmp_path / "train_processes.log") in message
