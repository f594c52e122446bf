"""Multi-GPU training through mmengine's launcher and torchrun (docs/design.md §7.2).

train_model trains in its own process on one device. With SELFTRAIN_GPUS=N (N > 1) it
instead writes the resolved config to the stage's scratch folder with
``launcher='pytorch'`` (DDP, one process per GPU, NCCL) and ``sync_bn='torch'`` (BatchNorm ->
SyncBatchNorm), and runs

    torchrun --standalone --nproc_per_node N -m selftrain.mm.launch CONFIG

which builds mmengine's Runner from it; the batch size in the model config is per GPU.
On Kubernetes or a GPU work pool the same variable is set in the job's environment.
"""

from __future__ import annotations

import os
import subprocess
import sys

from mmengine.config import Config


def gpus() -> int:
    """GPUs to train on (SELFTRAIN_GPUS, default 1; storage/settings.py)."""
    from storage.settings import settings

    return settings().gpus


def distributed_config(cfg: Config) -> Config:
    """The same training, as a DDP job: mmengine launches it from torchrun's environment."""
    cfg = Config(cfg.to_dict())
    cfg.launcher = "pytorch"
    cfg.sync_bn = "torch"
    cfg.env_cfg = dict(cfg.get("env_cfg", {}), dist_cfg=dict(backend="nccl"))
    return cfg


def torchrun_command(config_path: str, nproc: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "selftrain.mm.launch",
        config_path,
    ]


def train_distributed(cfg: Config, work_dir: str, nproc: int) -> None:
    """Write the DDP config next to the checkpoints and run it under torchrun; raises on failure."""
    path = os.path.join(work_dir, "train_config.py")
    distributed_config(cfg).dump(path)
    proc = subprocess.run(torchrun_command(path, nproc))
    if proc.returncode:
        raise RuntimeError(
            f"distributed training ({nproc} processes) failed with exit code {proc.returncode}; config {path}"
        )


def main(argv: list[str] | None = None) -> int:
    from mmengine.runner import Runner

    import selftrain.mm  # noqa: F401 - registers the project's models, datasets and transforms

    (path,) = argv if argv is not None else sys.argv[1:]
    Runner.from_cfg(Config.fromfile(path)).train()
    return 0


if __name__ == "__main__":
    sys.exit(main())
