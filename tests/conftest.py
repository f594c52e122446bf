"""Shared fixtures. Real components only: the S3 server is a real SeaweedFS process."""

from __future__ import annotations

import os

import pytest

# Under pytest-xdist (make test: two worker processes on a 2-core machine) each worker and the
# runs it starts compute on one thread: two trainings with a thread per core each would
# oversubscribe the cores, and OpenMP's spinning threads then slow both tenfold.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_name, "1")

# Non-AWS S3 servers do not implement the newer default request checksums.
os.environ.setdefault("AWS_REQUEST_CHECKSUM_CALCULATION", "WHEN_REQUIRED")
os.environ.setdefault("AWS_RESPONSE_CHECKSUM_VALIDATION", "WHEN_REQUIRED")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    from tests.s3server import S3Server

    server = S3Server(str(tmp_path_factory.mktemp("seaweedfs"))).start()
    yield server
    server.stop()


@pytest.fixture
def s3_bucket(s3_server, request):
    """A fresh, empty bucket per test."""
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True, **s3_server.storage_options())
    name = "t-" + "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:50].strip("-")
    if fs.exists(name):
        fs.rm(name, recursive=True)
    fs.mkdir(name)
    return name


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """One real Prefect server for the whole session (flows run in subprocesses against it)."""
    from tests.prefect_server import PrefectServer

    server = PrefectServer(str(tmp_path_factory.mktemp("prefect-home"))).start()
    yield server
    server.stop()
