"""A hook that records, on every rank of a DDP training, what that rank trained on and the
loss-normalisation EMAs it holds (tests/integration/test_ddp_cpu.py reads the files).

``custom_imports=dict(imports=['tests.ddp_probe'])`` registers it in the torchrun processes.
"""

from __future__ import annotations

import json
import os

from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS


@HOOKS.register_module()
class DDPProbeHook(Hook):
    """Writes ``<out>/rank<r>.jsonl``: a line at the start of training (``iter``: the
    iteration it starts from, after a resume) and one after every iteration (the images of
    each branch in this rank's batch, and ``ema_human`` / ``ema_pseudo`` / ``ema_steps``)."""

    def __init__(self, out: str):
        self.out = out

    def _write(self, row: dict) -> None:
        os.makedirs(self.out, exist_ok=True)
        with open(os.path.join(self.out, f"rank{get_rank()}.jsonl"), "a") as f:
            f.write(json.dumps(row) + "\n")

    @staticmethod
    def _emas(runner) -> dict:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        return {name: float(getattr(model, name)) for name in ("ema_human", "ema_pseudo", "ema_steps")}

    def before_train(self, runner) -> None:
        self._write(dict(event="start", iter=runner.iter, **self._emas(runner)))

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        images = {
            branch: sorted(os.path.basename(s.img_path) for s in samples if s is not None)
            for branch, samples in data_batch["data_samples"].items()
        }
        self._write(dict(event="iter", iter=runner.iter, images=images, **self._emas(runner)))
