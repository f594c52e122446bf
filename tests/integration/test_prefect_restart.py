"""The Prefect server restarts while a flow run trains (an upgrade, a crash of `make serve`):
the run keeps going (Prefect's client retries its API calls), and a re-run resumes from the store without
computing again anything that was complete. A Prefect server of its own (the session's shared
one keeps serving other tests), stopped mid-teacher and started again on the same port."""

from __future__ import annotations

import glob
import os
import time

import pytest

from tests.chaos import COMPUTED, complete
from tests.integration.test_detection_flow import demo
from tests.prefect_server import PrefectServer

pytestmark = pytest.mark.integration


def test_a_prefect_server_restart_mid_run_and_a_rerun_that_resumes(tmp_path):
    server = PrefectServer(str(tmp_path / "prefect-home")).start()
    try:
        out = str(tmp_path / "run")
        os.makedirs(out)
        info = {"PREFECT_LOGGING_LEVEL": "INFO"}
        proc, log = demo(out, server, wait=False, env_extra=info)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not glob.glob(f"{out}/work/deepforest/train/*/iter_20.pth"):
            assert proc.poll() is None, open(log).read()[-4000:]
            time.sleep(0.5)
        server.stop()  # mid-teacher
        time.sleep(5)
        server.start()
        proc.wait(timeout=900)
        output = open(log).read()
        assert proc.returncode == 0, output[-4000:]  # the run went on through the restart
        store = os.path.join(out, "store")
        before = complete(store)
        rerun = demo(out, server, env_extra=info)
        again = [uri for uri in COMPUTED.findall(rerun) if uri in before]
        assert not again, f"the re-run computed again what was complete: {again}"
        assert "report:" in rerun
        assert {uri: a for uri, a in complete(store).items() if uri in before} == before  # nothing rewritten
    finally:
        server.stop()
