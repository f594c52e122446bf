"""`selftrain run` without a Prefect server: the flow runs on Prefect's temporary server, which the
command starts while it checks the parameters and imports the flow (app/local_prefect.py)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests import messy_data

pytestmark = pytest.mark.integration


def command(tmp_path, params: dict) -> tuple[list[str], dict[str, str]]:
    path = tmp_path / "params.json"
    path.write_text(json.dumps(params))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}  # no server, Prefect's defaults
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect"), PREFECT_LOGGING_LEVEL="INFO", SELFTRAIN_WORK_DIR=str(tmp_path / "work")
    )
    return [sys.executable, "-m", "app.cli", "run", str(path)], env


def selftrain_run(tmp_path, params: dict) -> subprocess.CompletedProcess:
    args, env = command(tmp_path, params)
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)


def signalled_during_start(tmp_path, params: dict, signum: int) -> tuple[int, str, int]:
    """(exit code, output, the temporary server's port) of a run sent ``signum`` once its
    temporary server is starting (the flow's imports still under way). The output goes to a
    file: a server left running would hold a pipe open."""
    args, env = command(tmp_path, params)
    log = tmp_path / f"signal-{signum}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            args,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as in a terminal
        )
        deadline = time.monotonic() + 300
        while "Starting temporary server on" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.05)
        proc.send_signal(signum)
        code = proc.wait(timeout=120)
    text = log.read_text()
    (port,) = re.findall(r"Starting temporary server on http://127.0.0.1:(\d+)", text)
    return code, text, int(port)


def closed(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def messy_params(tmp_path) -> tuple[dict, dict]:
    """(the flow's parameters, the data's locations) of a tiny run on the messy detection set."""
    data = messy_data.detection_set(str(tmp_path / "data"))
    params = dict(
        dataset="messy",
        labeled=data["labeled"],
        val=data["val"],
        unlabeled=data["unlabeled"],
        teacher_iters=3,
        student_iters=3,
        store=str(tmp_path / "store"),
    )
    return params, data


def test_a_run_without_a_server_uses_one_temporary_server_and_leaves_none_running(tmp_path):
    params, data = messy_params(tmp_path)
    os.remove(os.path.join(data["labeled"]["image_root"], "b.jpg"))  # named in the COCO file
    done = selftrain_run(tmp_path, params)
    out = done.stdout + done.stderr
    # the flow ran on the server started early (one server, no second start), and its first stage
    # failed on the user's data with the missing image named
    assert done.returncode == 1, out[-4000:]
    assert len(re.findall(r"Starting temporary server on", out)) == 1, out[-4000:]
    assert "Beginning flow run" in out
    assert "are missing under" in out and "'b.jpg'" in out
    # the temporary server's telemetry is off (it locked the server's SQLite database)
    assert "database is locked" not in out and "telemetry" not in out.lower()
    (port,) = re.findall(r"Stopping temporary server on http://127.0.0.1:(\d+)", out)
    assert closed(int(port))

    # invalid parameters: no flow runs, and the server started meanwhile is stopped
    done = selftrain_run(tmp_path, dict(params, teacher_iters=4))
    out = done.stdout + done.stderr
    assert done.returncode == 2 and "teacher_iters (4) must be a multiple of k" in out, out[-4000:]
    assert "Beginning flow run" not in out
    (port,) = re.findall(r"Stopping temporary server on http://127.0.0.1:(\d+)", out)
    assert closed(int(port))


def test_ctrl_c_or_sigterm_before_the_flow_stops_the_temporary_server(tmp_path):
    """Prefect stops its temporary server at exit only once the server's process exists; the
    command stops the server it started early whenever it ends before the flow."""
    params, _ = messy_params(tmp_path)
    for signum, name in ((signal.SIGINT, "SIGINT"), (signal.SIGTERM, "SIGTERM")):
        code, out, port = signalled_during_start(tmp_path, params, signum)
        assert code == 128 + signum, out[-3000:]
        assert f"{name} before the flow started; the temporary server is stopped" in out
        assert "Beginning flow run" not in out and closed(port)
