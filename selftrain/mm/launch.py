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
import re
import subprocess
import sys
import time

from mmengine.config import Config

from selftrain.mm.progress import WORKER_PROGRESS


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
    # DDP waits for a gradient of every parameter unless told that some get none: layers a
    # config builds but does not use (MobileNetV2's last conv with out_indices=(2, 4, 6), an
    # unused auxiliary head) would fail the second iteration. A config may set False to save
    # the search.
    cfg.find_unused_parameters = cfg.get("find_unused_parameters", True)
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
            find_unused_parameters=cfg.find_unused_parameters,
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


def train_distributed(cfg: Config, work_dir: str, nproc: int, what: str = "training") -> str:
    """Write the DDP config next to the checkpoints and run it under torchrun; returns the
    config's path (``train_config.py`` in ``work_dir``).

    On CUDA, one process per GPU; without CUDA, ``nproc`` CPU processes (gloo). The processes'
    output (OpenMMLab's log of every rank) goes to ``train_processes.log`` in ``work_dir``,
    whose path is logged; rank 0's progress lines are relayed to the stage's log as they come.
    Raises ValueError when more GPUs are asked for than are visible, or more CPU processes
    than cores; RuntimeError when a process fails, naming the log and quoting its last error
    lines."""
    from selftrain.stage import stage_logger

    devices = cuda_devices()
    if devices and nproc > devices:
        raise ValueError(f"SELFTRAIN_GPUS={nproc} but this machine has {devices} visible CUDA device(s)")
    cores = usable_cores()
    if not devices and nproc > cores:
        raise ValueError(f"SELFTRAIN_GPUS={nproc} CPU processes (no CUDA device) but this machine has {cores} cores")
    path = os.path.join(work_dir, "train_config.py")
    distributed_config(cfg, cuda=bool(devices)).dump(path)
    env = dict(os.environ)
    if not devices:  # CPU processes share the cores (torchrun would give each one thread)
        env.setdefault("OMP_NUM_THREADS", str(max(1, cores // nproc)))
    log_path = os.path.join(work_dir, "train_processes.log")
    log = stage_logger()
    log.info("%s: %d processes (%s); their OpenMMLab log in %s", what, nproc, "NCCL" if devices else "gloo", log_path)
    with open(log_path, "ab") as out:
        start = out.tell()
        proc = subprocess.Popen(torchrun_command(path, nproc), env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            relay_progress(proc, log_path, start, lambda line: log.info("%s", line))
        except BaseException:
            # the task was cancelled or failed here: stop the training rather than leave it
            # writing checkpoints into a scratch folder that a re-run will use (torchrun stops
            # its ranks on SIGTERM)
            stop(proc)
            raise
    if proc.returncode:
        raise RuntimeError(
            f"{what}: distributed training ({nproc} processes) failed with exit code {proc.returncode}"
            f"{last_errors(log_path, start)}; the processes' log: {log_path}; config {path}"
        )
    return path


def relay_progress(proc: subprocess.Popen, log_path: str, start: int, emit, every_s: float = 2.0) -> None:
    """Follow ``log_path`` from byte ``start`` until ``proc`` ends, passing each complete line
    that starts with WORKER_PROGRESS (without it) to ``emit``. A line is taken only once its
    newline is written, so a line read half-written (or a UTF-8 character split) is whole."""
    pending = b""
    with open(log_path, "rb") as follow:
        follow.seek(start)
        while True:
            done = proc.poll() is not None  # before the read: what it wrote up to its end is read
            pending += follow.read()
            *lines, pending = pending.split(b"\n")
            if done and pending:
                lines, pending = [*lines, pending], b""
            for raw in lines:
                line = raw.decode("utf-8", "replace").rstrip("\r")
                if line.startswith(WORKER_PROGRESS):
                    emit(line[len(WORKER_PROGRESS) :])
            if done:
                return
            time.sleep(every_s)


def stop(proc: subprocess.Popen, grace_s: float = 60.0) -> None:
    """SIGTERM, then SIGKILL after ``grace_s`` seconds if the process has not ended."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. a container's cpuset), else
    os.cpu_count()."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def last_errors(log_path: str, start: int = 0, most: int = 3) -> str:
    """The last ``most`` distinct lines of the log (from byte ``start``) that name an error,
    as ': line | line', or '' when there is none."""
    with open(log_path, "rb") as f:
        f.seek(start)
        lines = f.read().decode("utf-8", "replace").splitlines()
    errors: list[str] = []
    for line in reversed(lines):
        text = line.split("]: ", 1)[1] if line.startswith("[rank") and "]: " in line else line
        text = text.strip()
        if re.match(r"^[A-Za-z_.]*(Error|Exception)\b", text) and text not in errors:
            errors.append(text)
            if len(errors) == most:
                break
    return (": " + " | ".join(reversed(errors))) if errors else ""


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
