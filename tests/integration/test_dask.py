"""The same flow fans out on Dask by configuration only: SELFTRAIN_DASK_ADDRESS points it at
a 2-worker LocalCluster on 127.0.0.1 (no dashboard, quiet logs); every shard is
pseudo-labeled inside a Dask worker process, and the run completes as on threads."""

from __future__ import annotations

import logging
import os

import pytest

from storage.store import ArtifactStore
from tests.integration.test_detection_flow import TINY, demo

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(prefect_server):
    from distributed import Client, LocalCluster

    # Workers report their task runs to the same Prefect server as the flow.
    env = {k: v for k, v in prefect_server.env().items() if k.startswith("PREFECT_")}
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            env=env,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as c,
        Client(c) as client,
    ):
        yield c, client


def test_shards_are_labeled_on_dask_workers(cluster, prefect_server, tmp_path, monkeypatch):
    c, client = cluster
    worker_pids = set(client.run(os.getpid).values())
    assert len(worker_pids) == 2
    monkeypatch.setenv("SELFTRAIN_DASK_ADDRESS", c.scheduler_address)
    out = str(tmp_path)
    output = demo(out, prefect_server, args=[*TINY, "--shard-size", "2"])
    assert "detection: zoph" in output
    store = ArtifactStore(os.path.join(out, "store"))
    shards = store.list("deepforest", "pseudo_boxes")
    assert len(shards) == 2  # 4 tiles, 2 per shard
    pids = {store.manifest(r).meta["worker"]["pid"] for r in shards}
    assert pids <= worker_pids  # labeled in the cluster's worker processes, not in the flow's
    assert "distributed.scheduler - INFO" not in output and "dashboard" not in output.lower()
