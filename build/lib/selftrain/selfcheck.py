"""Stack self-check: proves the installed stack works on this machine.

    python -m selftrain.selfcheck        (or: selftrain selfcheck)

Checks, each reported on one line with its time:
  * every package of the stack imports, at the locked versions;
  * mmcv.ops.nms (compiled) and torchvision.ops.nms agree on the same random boxes;
  * mmengine's collect_env runs (it imports torchvision, which is what breaks first);
  * a real mmengine Runner trains a toy model for 2 iterations, saves a checkpoint, and a
    second Runner resumes from it with torch's safe (weights_only) loading still on, and a
    checkpoint carrying arbitrary code is still refused.
Exit status 0 when all pass.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

EXPECTED = {
    "torch": "2.13.0",
    "torchvision": "0.28.0",
    "mmengine": "0.10.7",
    "mmcv": "2.1.0",
    "mmdet": "3.3.0",
    "mmseg": "1.2.2",
    "prefect": "3.8.8",
}


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    seconds: float


def check_imports() -> str:
    import importlib

    found = []
    for module, version in EXPECTED.items():
        mod = importlib.import_module(module)
        got = getattr(mod, "__version__", "?").split("+")[0]
        if got != version:
            raise RuntimeError(f"{module} {got} installed, {version} expected (run deploy/setup.sh)")
        found.append(f"{module} {got}")
    for module in (
        "mmcv.ops",
        "mmdet.models",
        "mmseg.models",
        "pycocotools.cocoeval",
        "pyarrow.parquet",
        "fsspec",
        "s3fs",
    ):
        importlib.import_module(module)
    return ", ".join(found)


def check_nms_agree() -> str:
    import torch
    import torchvision.ops
    from mmcv.ops import nms as mmcv_nms

    g = torch.Generator().manual_seed(0)
    xy = torch.rand(300, 2, generator=g) * 200
    wh = torch.rand(300, 2, generator=g) * 60 + 2
    boxes = torch.cat([xy, xy + wh], dim=1)
    scores = torch.rand(300, generator=g)
    for thr in (0.3, 0.5, 0.7):
        tv = torchvision.ops.nms(boxes, scores, thr)
        _, mm = mmcv_nms(boxes, scores, thr)  # offset=0 matches torchvision's box convention
        if not torch.equal(tv, mm):
            raise RuntimeError(f"torchvision.ops.nms and mmcv.ops.nms disagree at IoU {thr}")
    return f"300 random boxes, IoU 0.3/0.5/0.7: {len(tv)} kept at 0.7, identical indices"


def check_collect_env() -> str:
    from mmengine.utils.dl_utils import collect_env

    env = collect_env()
    return f"{len(env)} entries, TorchVision {env.get('TorchVision', '?')}, CUDA {env.get('CUDA available')}"


def check_checkpoint_round_trip() -> str:
    import pickle

    import torch
    from mmengine.model import BaseModel
    from mmengine.runner import Runner
    from torch.utils.data import Dataset

    class Toy(BaseModel):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(2, 1)

        def forward(self, inputs, targets=None, mode="tensor"):
            out = self.linear(inputs)
            if mode == "loss":
                return {"loss": ((out.squeeze(-1) - targets) ** 2).mean()}
            return out

    class Data(Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            return {"inputs": torch.tensor([float(i), 1.0]), "targets": torch.tensor(float(i))}

    with tempfile.TemporaryDirectory() as work:

        def runner(resume: bool, iters: int) -> Runner:
            return Runner(
                model=Toy(),
                work_dir=work,
                experiment_name=f"selfcheck-{int(resume)}",
                train_dataloader=dict(
                    dataset=Data(),
                    batch_size=4,
                    num_workers=0,
                    sampler=dict(type="InfiniteSampler", shuffle=False),
                    collate_fn=dict(type="default_collate"),
                ),
                optim_wrapper=dict(optimizer=dict(type="SGD", lr=0.01)),
                train_cfg=dict(by_epoch=False, max_iters=iters),
                default_hooks=dict(
                    checkpoint=dict(type="CheckpointHook", interval=2, by_epoch=False),
                    logger=dict(type="LoggerHook", interval=1),
                ),
                resume=resume,
                load_from=os.path.join(work, "iter_2.pth") if resume else None,
                log_level="ERROR",
                default_scope="mmengine",
            )

        first = runner(False, 2)
        first.train()
        saved = {k: v.clone() for k, v in first.model.state_dict().items()}
        second = runner(True, 4)
        second.load_or_resume()
        if second.iter != 2:
            raise RuntimeError(f"resume restored iteration {second.iter}, expected 2")
        for k, v in second.model.state_dict().items():
            if not torch.equal(v, saved[k]):
                raise RuntimeError(f"weight {k} differs after the round trip")
        second.train()

        class Evil:
            def __reduce__(self):
                return (os.system, ("echo pwned",))

        evil = os.path.join(work, "evil.pth")
        with open(evil, "wb") as f:
            pickle.dump({"state_dict": {}, "x": Evil()}, f, protocol=2)
        try:
            torch.load(evil)
        except pickle.UnpicklingError:
            pass
        else:
            raise RuntimeError("a checkpoint carrying code was loaded: weights_only loading is off")
    return "Runner save -> resume at iter 2, weights identical; a code-carrying pickle is refused"


CHECKS: list[tuple[str, Callable[[], str]]] = [
    ("imports and versions", check_imports),
    ("mmcv.ops.nms == torchvision.ops.nms", check_nms_agree),
    ("mmengine collect_env", check_collect_env),
    ("mmengine checkpoint round trip", check_checkpoint_round_trip),
]


def run() -> list[Check]:
    results = []
    for name, fn in CHECKS:
        t0 = time.perf_counter()
        try:
            detail, ok = fn(), True
        except Exception as exc:  # noqa: BLE001 - reported, and the exit code says it failed
            detail, ok = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}", False
        results.append(Check(name, ok, detail, time.perf_counter() - t0))
    return results


def main() -> int:
    results = run()
    for r in results:
        print(f"[{'ok' if r.ok else 'FAIL'}] {r.name} ({r.seconds:.1f}s): {r.detail}")
    failed = [r.name for r in results if not r.ok]
    print("self-check passed" if not failed else f"self-check FAILED: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
