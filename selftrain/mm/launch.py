"""Multi-process training through mmengine's launcher and torchrun (docs/design.md §7.2).

train_model trains in its own process on one device. With SELFTRAIN_GPUS=N (N > 1) it
instead writes the resolved config to the stage's scratch folder with
``launcher='pytorch'`` (DDP, one process per device) and runs

    torchrun --standalone --nproc_per_node N -m selftrain.mm.launch CONFIG

which builds mmengine's Runner from it; the batch size in the model config is per process.

- On a machine with CUDA: one process per GPU, the NCCL backend, and ``sync_bn='torch'``
  (BatchNorm -> SyncBatchNorm). N must not exceed the visible GPUs (ValueError).
- Without CUDA: N CPU processes, the gloo backend, plain BatchNorm (SyncBatchNorm is
  CUDA-only: ``sync_bn`` is not set and a model config's own ``SyncBN`` layers become ``BN``),
  and mmengine's DDP wrapper without ``device_ids``. Each process computes on cores / N
  threads (OMP_NUM_THREADS, unless it is set).

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


def cuda_devices() -> int:
    """Visible CUDA devices (0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def distributed_config(cfg: Config, cuda: bool = True) -> Config:
    """The same training, as a DDP job: mmengine launches it from torchrun's environment.

    ``cuda``: NCCL and SyncBatchNorm, one GPU per process; else gloo on CPU processes with
    plain BatchNorm and ``MMDistributedDataParallel(device_ids=None)`` (mmengine's default
    wrapper passes the local rank as a CUDA device)."""
    cfg = Config(cfg.to_dict())
    cfg.launcher = "pytorch"
    if cuda:
        cfg.sync_bn = "torch"
        cfg.env_cfg = dict(cfg.get("env_cfg", {}), dist_cfg=dict(backend="nccl"))
    else:
        cfg.pop("sync_bn", None)
        cfg.model = _without_sync_bn(cfg.model)  # a model config's own SyncBN (mmseg's bases) as well
        cfg.env_cfg = dict(cfg.get("env_cfg", {}), dist_cfg=dict(backend="gloo"))
        cfg.model_wrapper_cfg = dict(
            type="MMDistributedDataParallel",
            device_ids=None,
            broadcast_buffers=False,
            find_unused_parameters=cfg.get("find_unused_parameters", False),
        )
    return cfg


def _without_sync_bn(node):
    """A config tree with every ``type='SyncBN'`` norm layer made ``'BN'`` (SyncBatchNorm
    runs on CUDA only)."""
    if isinstance(node, dict):
        return {k: ("BN" if k == "type" and v == "SyncBN" else _without_sync_bn(v)) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return type(node)(_without_sync_bn(v) for v in node)
    return node


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
    """Write the DDP config next to the checkpoints and run it under torchrun.

    On CUDA, one process per GPU; without CUDA, ``nproc`` CPU processes (gloo). Raises
    ValueError when more GPUs are asked for than are visible, RuntimeError when a process
    fails (its exit code and the config's path in the message)."""
    devices = cuda_devices()
    if devices and nproc > devices:
        raise ValueError(f"SELFTRAIN_GPUS={nproc} but this machine has {devices} visible CUDA device(s)")
    path = os.path.join(work_dir, "train_config.py")
    distributed_config(cfg, cuda=bool(devices)).dump(path)
    env = dict(os.environ)
    if not devices:  # CPU processes share the cores (torchrun would give each one thread)
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    proc = subprocess.run(torchrun_command(path, nproc), env=env)
    if proc.returncode:
        raise RuntimeError(
            f"distributed training ({nproc} processes) failed with exit code {proc.returncode}; config {path}"
        )


def main(argv: list[str] | None = None) -> int:
    from mmengine.runner import Runner

    import selftrain.mm  # noqa: F401 - registers the project's models, datasets and transforms

    (path,) = argv if argv is not None else sys.argv[1:]
    cfg = Config.fromfile(path)
    if cfg.get("launcher") == "pytorch" and cfg.env_cfg.dist_cfg.backend == "gloo":
        # mmengine's init_dist selects a CUDA device first, which fails without CUDA: the
        # process group is made here from torchrun's environment, and mmengine then uses it.
        import torch.distributed as torch_dist

        if not torch_dist.is_initialized():
            torch_dist.init_process_group(backend="gloo")
    Runner.from_cfg(cfg).train()
    return 0


if __name__ == "__main__":
    sys.exit(main())
