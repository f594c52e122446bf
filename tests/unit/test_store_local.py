"""The store contract on a local folder (the default backend)."""

import pytest

from storage.store import ArtifactStore
from tests.store_contract import StoreContract


@pytest.fixture
def store(tmp_path):
    return ArtifactStore(str(tmp_path / "store"))


class TestLocalStore(StoreContract):
    pass


def test_credentials_in_the_url_are_refused_without_echoing_them():
    with pytest.raises(ValueError) as info:
        ArtifactStore("s3://AKIAXXXX:topsecret@bucket/prefix")
    assert "topsecret" not in str(info.value) and "environment" in str(info.value)


def test_refs_of_another_store_are_refused(tmp_path):
    a, b = ArtifactStore(str(tmp_path / "a")), ArtifactStore(str(tmp_path / "b"))
    ref = a.ref("demo", "unit", "0" * 32)
    with pytest.raises(ValueError, match="belongs to store"):
        b.has(ref)


def test_file_urls_are_local_paths(tmp_path):
    store = ArtifactStore(str(tmp_path / "s"))
    ref = store.ref("demo", "unit", "1" * 32)
    store.write(ref, {"f.txt": b"hi"})
    url = store.file_url(ref, "f.txt")
    assert url.startswith(str(tmp_path)) and open(url, "rb").read() == b"hi"


def test_a_commit_whose_retried_put_was_refused_keeps_its_own_manifest(tmp_path, monkeypatch):
    """On S3 a PUT that landed but timed out is sent again by the client's retries and refused
    (412): the manifest found is this writer's own, so its attempt must be kept, not removed."""
    from storage.keys import artifact_key

    store = ArtifactStore(str(tmp_path))
    ref = store.ref("demo", "unit", artifact_key("unit", 1, "", {}, {"n": 1}))
    real = store.create_exclusive

    def landed_then_refused(path, data, what):
        assert real(path, data, what)
        return False

    monkeypatch.setattr(store, "create_exclusive", landed_then_refused)
    with store.writer(ref) as w:
        w.write_bytes("f", b"mine")
    assert not w.reused and store.read(ref, "f") == b"mine"
