"""`selftrain run` without a Prefect server: the flow runs on Prefect's temporary server, which the
command starts while it checks the parameters and imports the flow (app/local_prefect.py)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys

import pytest

from tests import messy_data

pytestmark = pytest.mark.integration


def selftrain_run(tmp_path, params: dict) -> subprocess.CompletedProcess:
    path = tmp_path / "params.json"
    path.write_text(json.dumps(params))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}  # no server, Prefect's defaults
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect"), PREFECT_LOGGING_LEVEL="INFO", SELFTRAIN_WORK_DIR=str(tmp_path / "work")
    )
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "run", str(path)], env=env, capture_output=True, text=True, timeout=600
    )


def closed(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_a_run_without_a_server_uses_one_temporary_server_and_leaves_none_running(tmp_path):
    data = messy_data.detection_set(str(tmp_path / "data"))
    os.remove(os.path.join(data["labeled"]["image_root"], "b.jpg"))  # named in the COCO file
    params = dict(
        dataset="messy",
        labeled=data["labeled"],
        val=data["val"],
        unlabeled=data["unlabeled"],
        teacher_iters=3,
        student_iters=3,
        store=str(tmp_path / "store"),
    )
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
