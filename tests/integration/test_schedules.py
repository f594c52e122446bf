"""Schedules fire: a real Prefect server turns an active schedule into a flow run that a real
process worker completes, and none of the server's services logs an error meanwhile.

(With SQLAlchemy 2.1 beside prefect 3.8.8 the scheduler failed every minute, in the server log
only, and no scheduled run was ever created while the UI showed the schedule as active.)"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.processes import stop_group

pytestmark = pytest.mark.integration
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
POOL = "selftrain-schedule-test"

REGISTER = """
import sys
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.deployments.runner import EntrypointType
from prefect.exceptions import ObjectAlreadyExists
from prefect.schedules import Interval
from flows.watch_unlabeled import watch_unlabeled

pool, prefix, store = sys.argv[1:4]
with get_client(sync_client=True) as client:
    try:
        client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
    except ObjectAlreadyExists:
        pass
deployment = watch_unlabeled.to_deployment(
    name="schedule-test", parameters={"dataset": "schedule-test", "prefix": prefix, "store": store},
    work_pool_name=pool, entrypoint_type=EntrypointType.MODULE_PATH, schedules=[Interval(10, active=True)])
print(deployment.apply(work_pool_name=pool))
"""


def test_an_active_schedule_creates_a_run_that_a_worker_completes(prefect_server, tmp_path):
    from PIL import Image
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    prefix = tmp_path / "unlabeled"
    prefix.mkdir()
    Image.new("RGB", (8, 8)).save(prefix / "a.png")
    env = prefect_server.env()
    log_start = prefect_server.log_size()
    out = subprocess.run(
        [sys.executable, "-c", REGISTER, POOL, str(prefix), str(tmp_path / "store")],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    deployment_id = out.stdout.strip().splitlines()[-1]
    log = open(tmp_path / "worker.log", "w")
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prefect",
            "worker",
            "start",
            "--pool",
            POOL,
            "--name",
            "schedule-worker",
            "--prefetch-seconds",
            "5",
        ],
        env=env,
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    api = temporary_settings({PREFECT_API_URL: prefect_server.api_url})
    api.__enter__()
    try:
        completed, deadline = [], time.monotonic() + 240
        while not completed and time.monotonic() < deadline:
            time.sleep(3)
            with get_client(sync_client=True) as client:
                runs = client.read_flow_runs(
                    deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
                )
            completed = [r for r in runs if r.state and r.state.is_completed()]
        states = sorted({r.state.name for r in runs if r.state})
        assert completed, (
            f"no scheduled run completed within 240 s (runs: {len(runs)}, states {states}); "
            f"server: {prefect_server.service_errors(log_start)[-5:]}; worker: "
            + open(tmp_path / "worker.log").read()[-3000:]
        )
        assert completed[0].auto_scheduled  # created by the scheduler, not by a client
        assert os.path.isdir(tmp_path / "store" / "schedule-test" / "landed")  # the run did its work
        assert prefect_server.service_errors(log_start) == []
    finally:
        with get_client(sync_client=True) as client:
            client.delete_deployment(deployment_id)
        api.__exit__(None, None, None)
        stop_group(worker)
