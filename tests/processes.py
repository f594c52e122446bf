"""Stopping the real servers and workers the integration tests start."""

from __future__ import annotations

import os
import signal
import subprocess

import psutil


def stop_group(proc: subprocess.Popen | None, sig: int = signal.SIGTERM, grace: float = 60.0) -> None:
    """Stop a process started with start_new_session=True and everything it spawned.

    `sig` goes to its process group first (a clean shutdown); whatever is still alive after
    `grace` seconds is killed, descendants included. A Prefect worker runs each flow run in a
    session of its own, so the group alone does not reach them: a flow run left behind would keep
    training, and a worker left behind would pick up the next test's runs."""
    if proc is None or proc.poll() is not None:
        return
    try:
        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    _, alive = psutil.wait_procs(family, timeout=5)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=30)
    proc.wait(timeout=30)


def run_unprivileged(code: str) -> subprocess.CompletedProcess:
    """Run Python ``code`` (the repository on its path) so that file permissions apply: as root,
    without the capabilities that read past them (util-linux ``setpriv``). pytest.skip where
    that cannot be arranged (root without setpriv, or setpriv refused by the container)."""
    import shutil
    import sys
    from pathlib import Path

    import pytest

    command = [sys.executable, "-c", code]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("root without setpriv: a folder of mode 000 stays readable")
        caps = "-dac_override,-dac_read_search"
        command = ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}", *command]
    root = str(Path(__file__).resolve().parents[1])
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": root})
    if done.returncode != 0 and done.stderr.startswith("setpriv:"):
        pytest.skip(f"setpriv cannot drop capabilities here: {done.stderr.strip()}")
    return done
