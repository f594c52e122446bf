"""A storage outage of a few seconds does not fail a run: tasks retry it with backoff.

A SeaweedFS server of its own (the session's shared one keeps serving other tests) is stopped
while a real task runs against it and started again a few seconds later on the same ports.
"""

from __future__ import annotations

import threading
import time

import pytest

from storage.keys import artifact_key
from storage.store import ArtifactStore
from tests.s3server import S3Server


@pytest.fixture
def own_s3(tmp_path, monkeypatch):
    import s3fs

    from selftrain.stage import get_store

    server = S3Server(str(tmp_path / "seaweedfs")).start()
    options = server.storage_options()
    monkeypatch.setenv("SELFTRAIN_S3_ENDPOINT_URL", server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", options["key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", options["secret"])
    s3fs.S3FileSystem(skip_instance_cache=True, **options).mkdir("outage")
    get_store.cache_clear()
    yield server
    get_store.cache_clear()
    if server.proc is not None:
        server.stop()


def _model(url: str) -> str:
    """A committed teacher artifact in the store (what find_model looks up)."""
    store = ArtifactStore(url)
    ref = store.ref("outage", "train", artifact_key("train", 1, "", {}, {"role": "teacher"}))
    store.write(ref, {"ckpt-1.pth": b"weights"}, meta={"role": "teacher", "last": "ckpt-1.pth", "params": {}})
    return f"train/{ref.key}"


def _run_count(state) -> int:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_task_run(state.state_details.task_run_id).run_count


def test_a_task_rides_out_a_storage_outage_and_a_user_error_is_not_retried(own_s3):
    from prefect import flow

    from tasks.find_model import find_model

    url = "s3://outage/store"
    reference = _model(url)

    @flow
    def look_up(reference: str):
        return find_model(url, "outage", reference, return_state=True)

    assert _run_count(look_up(reference)) == 1  # Prefect (its temporary server) is up before the outage
    own_s3.stop()  # the storage goes away before the task starts ...
    restart = threading.Timer(12.0, own_s3.start)  # ... and comes back 12 s later
    restart.start()
    started = time.monotonic()
    state = look_up(reference)
    restart.join()
    assert state.is_completed(), state
    assert state.result().key == reference.split("/")[1]
    assert time.monotonic() - started >= 12.0
    # failed with StorageUnavailable (the store's own retries give up within seconds), then
    # retried after 5 s, 10 s, ... (SELFTRAIN_OUTAGE_RETRY_DELAY_S) until the storage was back
    assert _run_count(state) >= 2

    # a wrong reference is the user's error: it fails at once, sooner than the first retry's delay
    from selftrain.stage import ModelNotFound

    started = time.monotonic()
    with pytest.raises(ModelNotFound, match="is not a completed model"):
        look_up("train/" + "0" * 32)
    assert time.monotonic() - started < 5.0
