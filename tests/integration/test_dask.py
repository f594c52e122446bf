"""The same flow fans out on Dask by configuration only: SELFTRAIN_DASK_ADDRESS points it at
a 2-worker LocalCluster on 127.0.0.1 (no dashboard, quiet logs); every shard is
pseudo-labeled inside a Dask worker process, and the run completes as on threads.

The run keeps its store on the S3 test server, with the credentials in the environment only:
afterwards nothing the pipeline wrote - its log, the Prefect server's database and logs (flow
and task runs, parameters, results, artifacts, events, INFO logs), the store's objects
(manifests, tables, checkpoints, reports), the scratch folders and the report - holds the
secret."""

from __future__ import annotations

import logging
import os

import pytest

from storage.store import ArtifactStore
from tests.integration.test_detection_flow import TINY, demo

pytestmark = pytest.mark.integration


def s3_env(s3_server) -> dict[str, str]:
    options = s3_server.storage_options()
    return {
        "SELFTRAIN_S3_ENDPOINT_URL": s3_server.endpoint,
        "AWS_ACCESS_KEY_ID": options["key"],
        "AWS_SECRET_ACCESS_KEY": options["secret"],
    }


@pytest.fixture(scope="module")
def cluster(prefect_server, s3_server):
    from distributed import Client, LocalCluster

    # Workers report their task runs to the same Prefect server as the flow, and read the
    # store with the credentials of their environment.
    env = {k: v for k, v in prefect_server.env().items() if k.startswith("PREFECT_")}
    env.update(s3_env(s3_server), PREFECT_LOGGING_LEVEL="INFO")
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


def test_shards_are_labeled_on_dask_workers_and_no_secret_is_written(
    cluster, prefect_server, s3_server, s3_bucket, tmp_path, monkeypatch
):
    import s3fs

    c, client = cluster
    worker_pids = set(client.run(os.getpid).values())
    assert len(worker_pids) == 2
    env = s3_env(s3_server)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SELFTRAIN_DASK_ADDRESS", c.scheduler_address)
    out = str(tmp_path)
    url = f"s3://{s3_bucket}/store"
    output = demo(
        out,
        prefect_server,
        # a shorter teacher than TINY's: what is tested is where shards run and what is written
        args=[*TINY, "--teacher-iters", "30", "--shard-size", "2", "--store", url],
        env_extra={"PREFECT_LOGGING_LEVEL": "INFO"},
    )
    assert "detection: zoph" in output
    store = ArtifactStore(url)
    shards = store.list("deepforest", "pseudo_boxes")
    assert len(shards) == 2  # 4 tiles, 2 per shard
    pids = {store.manifest(r).meta["worker"]["pid"] for r in shards}
    assert pids <= worker_pids  # labeled in the cluster's worker processes, not in the flow's
    assert "train teacher: computed" in output  # INFO logs were on (and are searched below)

    secret = env["AWS_SECRET_ACCESS_KEY"].encode()
    assert len(secret) >= 16
    with open(os.path.join(s3_server.folder, "s3.json"), "rb") as f:
        assert secret in f.read()  # the search finds the secret where it is (the server's own config)
    found = ["the run's log"] if secret in output.encode() else []
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **s3_server.storage_options())
    objects = fs.find(s3_bucket)
    assert any(o.endswith(".pth") for o in objects) and any(o.endswith("report.json") for o in objects)
    found += [o for o in objects if secret in fs.cat_file(o)]
    for folder in (out, prefect_server.home):  # scratch, report, data; the server's database and logs
        for root, _, files in os.walk(folder):
            for name in files:
                path = os.path.join(root, name)
                with open(path, "rb") as f:
                    if secret in f.read():
                        found.append(path)
    assert os.path.getsize(os.path.join(prefect_server.home, "prefect.db")) > 0
    assert not found, f"the S3 secret was written to {found}"
