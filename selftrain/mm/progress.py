"""What a person sees while OpenMMLab works: progress lines and a Prefect progress artifact,
the full OpenMMLab log in a file per stage.

mmengine's Runner prints its environment dump, the whole resolved config, the hook table and a
line every few iterations, and pycocotools prints its tables: about 1,700 lines for the demo.
``quiet_openmmlab`` sends all of it to ``{work_dir}/{experiment}.log`` (logged once, with its
path) and leaves the console and the Prefect UI to ``ProgressHook``: one line every
``every_s`` seconds with iteration / total, a text bar, the loss, iterations per second and the
ETA, plus a progress artifact in the UI.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from collections.abc import Iterator

from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from selftrain.stage import duration, stage_logger


def bar(fraction: float, width: int = 20) -> str:
    """A text progress bar: ``bar(0.5, 10) == '[#####.....]'``; ``fraction`` is clipped to [0, 1]."""
    done = int(round(max(0.0, min(1.0, fraction)) * width))
    return "[" + "#" * done + "." * (width - done) + "]"


def _prefect_progress(description: str):
    """A Prefect progress artifact inside a flow or task run, else None."""
    try:
        from prefect.artifacts import create_progress_artifact

        return create_progress_artifact(progress=0.0, description=description)
    except Exception:  # noqa: BLE001 - outside a run (scripts, torchrun workers) there is no UI to update
        return None


def _update_progress(artifact, percent: float) -> None:
    if artifact is None:
        return
    try:
        from prefect.artifacts import update_progress_artifact

        update_progress_artifact(artifact, progress=percent)
    except Exception:  # noqa: BLE001 - progress is best effort
        pass


#: The start of a progress line that a torchrun worker prints (rank 0 only) for its parent to
#: relay into the stage's log (selftrain/mm/launch.py).
WORKER_PROGRESS = "selftrain-progress: "


def in_torchrun_worker() -> bool:
    """True in a process that torchrun started (a DDP rank): it has no Prefect run of its own."""
    return "TORCHELASTIC_RUN_ID" in os.environ


@HOOKS.register_module()
class ProgressHook(Hook):
    """Training progress for people: a log line (Prefect's run logger inside a run) every
    ``every_s`` seconds and at the end, and a Prefect progress artifact. Reads only; changes
    nothing of the training. In a torchrun worker (DDP) it makes no artifact (there is no run
    to attach it to: trying would start a Prefect server per rank), and rank 0 alone prints
    its lines, prefixed with WORKER_PROGRESS, for the parent process to relay."""

    priority = "VERY_LOW"

    def __init__(self, what: str = "training", every_s: float = 30.0):
        self.what, self.every_s = what, float(every_s)
        self._t0 = self._last = 0.0
        self._artifact = None
        self._worker = False

    def before_train(self, runner) -> None:
        self._t0 = self._last = time.monotonic()
        self._start_iter = runner.iter
        self._worker = in_torchrun_worker()
        if not self._worker:
            self._artifact = _prefect_progress(f"{self.what}: {runner.max_iters} iterations")

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        now, it, total = time.monotonic(), runner.iter + 1, runner.max_iters
        if now - self._last < self.every_s and it < total:
            return
        self._last = now
        rate = (it - self._start_iter) / max(now - self._t0, 1e-9)
        loss = ""
        if isinstance(outputs, dict) and "loss" in outputs:
            value = outputs["loss"]
            loss = f", loss {float(value.detach() if hasattr(value, 'detach') else value):.4f}"
        line = (
            f"{self.what}: {bar(it / total)} {it}/{total}{loss}, {rate:.2f} it/s, "
            f"ETA {duration((total - it) / rate if rate > 0 else 0.0)}"
        )
        if self._worker:
            if runner.rank == 0:
                print(WORKER_PROGRESS + line, flush=True)
            return
        stage_logger().info("%s", line)
        _update_progress(self._artifact, 100.0 * it / total)


@contextlib.contextmanager
def quiet_openmmlab(work_dir: str, experiment: str, what: str) -> Iterator[str]:
    """Route one Runner's log (the MMLogger named ``experiment``) to a file in ``work_dir``
    (INFO and above) with only warnings on the console, and the prints of the libraries it
    calls (pycocotools) to the same file. Yields the log file's path, which is logged."""
    from mmengine.logging import MMLogger

    os.makedirs(work_dir, exist_ok=True)
    log_file = os.path.join(work_dir, f"{experiment}.log")
    logger = MMLogger.get_instance(
        experiment, logger_name="mmengine", log_file=log_file, log_level="INFO", file_mode="a"
    )
    for handler in logger.handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.WARNING)
    stage_logger().info("%s: OpenMMLab log in %s", what, log_file)
    with open(log_file, "a") as prints, contextlib.redirect_stdout(prints), warnings.catch_warnings():
        # the Runner asks for its logger by name again, with arguments that the instance made
        # here already has: mmengine warns about that
        warnings.filterwarnings("ignore", message=".*instance named of .* has been created")
        yield log_file
