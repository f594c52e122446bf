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
from selftrain.mm.launch import train_distributed

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU (gloo) path: CUDA machines take NCCL")
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


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU (gloo) path: CUDA machines take NCCL")
def test_train_model_with_selftrain_gpus_2_trains_on_two_processes_and_stores_the_checkpoints(tmp_path, monkeypatch):
    """What a user gets from SELFTRAIN_GPUS=2 on a machine without CUDA: the stage trains under
    torchrun on two gloo processes and stores its checkpoints as a one-process training does."""
    from selftrain.stage import get_store
    from tasks.register_seg_dataset import register_seg_dataset
    from tasks.train_model import train_model

    for sub in ("img", "ann"):
        (tmp_path / sub).mkdir()
    rng = np.random.default_rng(1)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (48, 56 + 8 * i, 3), dtype=np.uint8)).save(tmp_path / "img" / f"{i}.png")
        mask = np.zeros((48, 56 + 8 * i), np.uint8)
        mask[8:30, 10:40] = 1
        Image.fromarray(mask).save(tmp_path / "ann" / f"{i}.png")
    store_url = str(tmp_path / "store")
    monkeypatch.setenv("SELFTRAIN_WORK_DIR", str(tmp_path / "scratch"))
    monkeypatch.setenv("SELFTRAIN_GPUS", "2")
    labeled = register_seg_dataset.fn(
        store_url, "tiny", str(tmp_path / "img"), str(tmp_path / "ann"), ["background", "thing"], "labeled", ".png"
    )
    ref = train_model.fn(
        store_url, "seg/deeplabv3plus_mnv2_128_cpu", labeled, None, role="teacher", iters=2, k=2, seed=0,
        pretrained=False,
    )  # fmt: skip
    manifest = get_store(store_url).manifest(ref)
    assert {"ckpt-1.pth", "ckpt-2.pth", "config.py"} <= set(manifest.files)
    assert manifest.meta["iters"] == 2
    (dist_config,) = (tmp_path / "scratch").rglob("train_config.py")  # what torchrun ran
    text = dist_config.read_text()
    assert "launcher = 'pytorch'" in text and "backend='gloo'" in text
