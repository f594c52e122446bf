"""The store contract against a real S3 server (SeaweedFS on 127.0.0.1), plus its failures."""

import os
import signal
import time

import pytest

from storage.store import ArtifactStore, StorageAccessDenied, StorageUnavailable, StoreError, s3_defaults
from tests.s3server import S3Server
from tests.store_contract import KEY, StoreContract

pytestmark = pytest.mark.integration


@pytest.fixture
def store(s3_server, s3_bucket):
    return ArtifactStore(f"s3://{s3_bucket}/prefix", s3_server.storage_options())


class TestS3Store(StoreContract):
    pass


def test_refs_carry_the_s3_url(store, s3_bucket):
    ref = store.ref("demo", "unit", KEY)
    store.write(ref, {"f": b"1"})
    assert ref.uri == f"s3://{s3_bucket}/prefix/demo/unit/{KEY}"
    assert store.file_url(ref, "f").startswith(f"s3://{s3_bucket}/prefix/demo/unit/{KEY}/a-")


@pytest.mark.parametrize("which", ["secret", "key"])
def test_wrong_credentials_fail_fast_and_clearly_without_leaking_them(s3_server, s3_bucket, which):
    options = s3_server.storage_options(**{which: "wrong-" + which + "-value-XYZ"})
    t0 = time.monotonic()
    with pytest.raises(StorageAccessDenied, match="check the credentials") as info:
        ArtifactStore(f"s3://{s3_bucket}/prefix", options)
    assert time.monotonic() - t0 < 10
    assert "wrong-secret-value-XYZ" not in str(info.value)
    assert s3_bucket in str(info.value)


def test_missing_bucket_is_named(s3_server):
    with pytest.raises(StoreError, match="bucket 'no-such-bucket' does not exist"):
        ArtifactStore("s3://no-such-bucket/x", s3_server.storage_options())


def test_stopped_server_gives_a_clear_error_not_a_hang(tmp_path):
    server = S3Server(str(tmp_path / "weed")).start()
    try:
        import s3fs

        s3fs.S3FileSystem(skip_instance_cache=True, **server.storage_options()).mkdir("bkt")
        store = ArtifactStore("s3://bkt/p", server.storage_options())
        ref = store.ref("demo", "unit", KEY)
        store.write(ref, {"f": b"x"})
    finally:
        server.stop()
    t0 = time.monotonic()
    with pytest.raises(StorageUnavailable, match="is the storage service running"):
        store.read(ref, "f")
    with pytest.raises(StorageUnavailable):
        store.writer(ref).write_bytes("g", b"y")
    with pytest.raises(StorageUnavailable):
        ArtifactStore("s3://bkt/p", server.storage_options())
    assert time.monotonic() - t0 < 60


def test_frozen_server_times_out_within_the_configured_bound(tmp_path):
    """A server that accepts connections but never answers (SIGSTOP): bounded by timeouts."""
    server = S3Server(str(tmp_path / "weed")).start()
    try:
        import s3fs

        s3fs.S3FileSystem(skip_instance_cache=True, **server.storage_options()).mkdir("bkt")
        options = dict(
            server.storage_options(),
            config_kwargs={"connect_timeout": 1, "read_timeout": 1, "retries": {"max_attempts": 1, "mode": "standard"}},
        )
        store = ArtifactStore("s3://bkt/p", options)
        ref = store.ref("demo", "unit", KEY)
        os.killpg(server.proc.pid, signal.SIGSTOP)
        t0 = time.monotonic()
        with pytest.raises(StorageUnavailable):
            store.has(ref)
        with pytest.raises(StorageUnavailable):  # a PUT too: no wait for "100 Continue"
            store.writer(ref).write_bytes("f", b"x")
        assert time.monotonic() - t0 < 30
    finally:
        if server.proc:
            os.killpg(server.proc.pid, signal.SIGCONT)
        server.stop()


def test_defaults_bound_retries_and_take_the_endpoint_from_the_environment(monkeypatch):
    monkeypatch.setenv("SELFTRAIN_S3_ENDPOINT_URL", "http://127.0.0.1:9")
    opts = s3_defaults({})
    assert opts["client_kwargs"]["endpoint_url"] == "http://127.0.0.1:9"
    assert opts["config_kwargs"]["retries"]["max_attempts"] <= 5
    assert opts["config_kwargs"]["connect_timeout"] <= 10
    explicit = s3_defaults({"client_kwargs": {"endpoint_url": "http://x"}})
    assert explicit["client_kwargs"]["endpoint_url"] == "http://x"
