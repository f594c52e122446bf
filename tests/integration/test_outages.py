"""A storage outage of a few seconds does not fail a run: tasks retry it with backoff.

A SeaweedFS server of its own (the session's shared one keeps serving other tests) is stopped
while a real task runs against it and started again a few seconds later on the same ports.
The flow runs in a process of its own against the session's Prefect server, as a user's run
does (a flow run inside the test process would leave Prefect's threads there, which forked
DataLoader workers of later tests must not inherit).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest

from storage.keys import artifact_key
from storage.store import ArtifactStore
from tests.s3server import S3Server

pytestmark = pytest.mark.integration

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Runs the real find_model task in a flow: once to warm up, then - after the test said GO, with
# the storage stopped - once more, then with a wrong reference; prints what happened as JSON.
SCRIPT = r"""
import json, sys, time
from prefect import flow
from prefect.client.orchestration import get_client
from tasks.find_model import find_model

url, reference = sys.argv[1], sys.argv[2]

@flow
def look_up(reference: str):
    return find_model(url, "outage", reference, return_state=True)

def run_count(state):
    with get_client(sync_client=True) as client:
        return client.read_task_run(state.state_details.task_run_id).run_count

assert run_count(look_up(reference)) == 1
print("READY", flush=True)
sys.stdin.readline()  # GO: the storage is stopped now
t0 = time.monotonic()
state = look_up(reference)
result = {"completed": state.is_completed(), "seconds": time.monotonic() - t0, "runs": run_count(state),
          "key": state.result().key if state.is_completed() else None}
t0 = time.monotonic()
try:
    look_up("train/" + "0" * 32)
    result["wrong"] = "no error"
except Exception as exc:
    result["wrong"] = f"{type(exc).__name__}: {exc}"
result["wrong_seconds"] = time.monotonic() - t0
print("RESULT " + json.dumps(result), flush=True)
"""


@pytest.fixture
def own_s3(tmp_path):
    import s3fs

    server = S3Server(str(tmp_path / "seaweedfs")).start()
    s3fs.S3FileSystem(skip_instance_cache=True, **server.storage_options()).mkdir("outage")
    yield server
    if server.proc is not None:
        server.stop()


def test_a_task_rides_out_a_storage_outage_and_a_user_error_is_not_retried(own_s3, prefect_server):
    options = own_s3.storage_options()
    env = dict(
        prefect_server.env(),
        SELFTRAIN_S3_ENDPOINT_URL=own_s3.endpoint,
        AWS_ACCESS_KEY_ID=options["key"],
        AWS_SECRET_ACCESS_KEY=options["secret"],
        PREFECT_LOGGING_LEVEL="INFO",  # Prefect logs each retry at INFO
    )
    url = "s3://outage/store"
    store = ArtifactStore(url, storage_options=options)
    ref = store.ref("outage", "train", artifact_key("train", 1, "", {}, {"role": "teacher"}))
    store.write(ref, {"ckpt-1.pth": b"weights"}, meta={"role": "teacher", "last": "ckpt-1.pth", "params": {}})

    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, url, f"train/{ref.key}"],
        env=env,
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    try:
        for line in proc.stdout:  # Prefect is up and the task found the model once
            lines.append(line)
            if line.startswith("READY"):
                break
        assert lines and lines[-1].startswith("READY"), "".join(lines)[-3000:]
        own_s3.stop()  # the storage goes away before the task starts ...
        restart = threading.Timer(12.0, own_s3.start)  # ... and comes back 12 s later
        restart.start()
        proc.stdin.write("GO\n")
        proc.stdin.flush()
        rest, _ = proc.communicate(timeout=300)
        restart.join()
    finally:
        if proc.poll() is None:
            proc.kill()
    output = "".join(lines) + rest
    (result,) = [json.loads(line[len("RESULT ") :]) for line in output.splitlines() if line.startswith("RESULT ")]
    assert result["completed"] and result["key"] == ref.key, output[-3000:]
    assert result["seconds"] >= 12.0
    # failed with StorageUnavailable (the store's own retries give up within seconds), then
    # retried after 5 s, 10 s, ... (SELFTRAIN_OUTAGE_RETRY_DELAY_S) until the storage was back
    assert result["runs"] >= 2
    assert "Retry 1/4" in output and "StorageUnavailable" in output
    # a wrong reference is the user's error: it fails at once, sooner than the first retry's delay
    assert result["wrong"].startswith("ModelNotFound") and "is not a completed model" in result["wrong"]
    assert result["wrong_seconds"] < 5.0
