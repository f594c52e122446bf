"""Leases (storage/leases.py) on a local store: one holder at a time, waiters reuse its result,
a dead holder's lease lapses. Racing claimers are tested on both backends by the store
contract (tests/store_contract.py)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time

import pytest

from storage.keys import artifact_key
from storage.leases import Holder, claim, machine_id
from storage.store import ArtifactStore

KEY = artifact_key("unit", 1, "", {}, {"lease": 1})


@pytest.fixture
def store(tmp_path):
    return ArtifactStore(str(tmp_path / "store"))


def _lease_file(store, ref, n, **holder):
    path = f"{store.key_dir(ref)}/LEASE-{n:06d}.json"
    store.fs.makedirs(store.key_dir(ref), exist_ok=True)
    store.fs.pipe_file(path, json.dumps(holder).encode())


def test_a_free_key_is_claimed_and_a_complete_one_is_reused(store):
    ref = store.ref("d", "unit", KEY)
    lease = claim(store, ref, owner="run A")
    assert lease is not None and lease.generation == 1
    store.write(ref, {"f": b"done"})
    lease.release()
    assert claim(store, ref) is None  # complete: reuse, no lease


def test_a_released_lease_is_taken_by_the_next_generation_and_numbers_are_never_reused(store):
    ref = store.ref("d", "unit", KEY)
    claim(store, ref, owner="run A").release()  # failed without committing
    lease = claim(store, ref, owner="run B")
    assert lease.generation == 2
    lease.release()
    names = sorted(p.rsplit("/", 1)[1] for p in store.fs.ls(store.key_dir(ref), detail=False))
    assert names == ["LEASE-000001.json", "LEASE-000002.json"]  # kept: a stale claimer of 2 must fail


def test_a_lease_left_by_a_failing_store_call_is_released(store, monkeypatch):
    """The output's completeness check fails (an outage) right after the lease was taken: the
    lease is released, so the task's retry in this process does not wait for itself."""
    ref = store.ref("d", "unit", KEY)
    real, calls = store.has, []

    def has(r):
        calls.append(r)
        if len(calls) == 2:  # the check after taking the lease
            raise OSError("storage unavailable")
        return real(r)

    monkeypatch.setattr(store, "has", has)
    with pytest.raises(OSError):
        claim(store, ref)
    monkeypatch.setattr(store, "has", real)
    lease = claim(store, ref, poll_s=0.05)
    assert lease is not None and lease.generation == 2
    lease.release()


def test_a_pid_is_judged_only_on_its_own_machine(store):
    """Containers sharing a host name are not one machine: a holder with another machine id
    is waited for until its lease expires, even when its PID does not run here."""
    ref = store.ref("d", "unit", KEY)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    _lease_file(
        store, ref, 1, owner="twin container", host=socket.gethostname(), machine="other-boot", pid=int(dead.stdout),
        expires_at=time.time() + 0.8,
    )  # fmt: skip
    started = time.monotonic()
    lease = claim(store, ref, poll_s=0.1)
    assert time.monotonic() - started >= 0.6 and lease.generation == 2
    lease.release()


def test_a_waiter_reuses_what_the_holder_commits(store):
    ref = store.ref("d", "unit", KEY)
    holder = claim(store, ref, owner="run A")
    waited = []
    result = []

    def second_run():
        result.append(claim(store, ref, owner="run B", poll_s=0.05, on_wait=waited.append))

    t = threading.Thread(target=second_run)
    t.start()
    time.sleep(0.5)
    assert t.is_alive()  # waiting while run A holds the lease
    store.write(ref, {"f": b"A's result"})
    holder.release()
    t.join(5)
    assert result == [None] and [h.owner for h in waited] == ["run A"]


def test_the_lease_of_a_killed_process_on_this_host_lapses_at_once(store):
    ref = store.ref("d", "unit", KEY)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    _lease_file(
        store, ref, 1, owner="killed run", host=socket.gethostname(), machine=machine_id(), pid=pid,
        expires_at=time.time() + 600,
    )  # fmt: skip
    lease = claim(store, ref, poll_s=0.05)
    assert lease is not None and lease.generation == 2
    lease.release()


def test_a_live_holder_elsewhere_is_waited_for_until_its_lease_expires(store):
    ref = store.ref("d", "unit", KEY)
    _lease_file(store, ref, 1, owner="run on node 7", host="node-7", pid=1, expires_at=time.time() + 1.0)
    assert not Holder(owner="x", host="node-7", pid=1, expires_at=time.time() + 1.0).is_free()
    started = time.monotonic()
    lease = claim(store, ref, poll_s=0.1)
    assert lease is not None and lease.generation == 2
    assert time.monotonic() - started >= 0.8  # waited for the expiry, not less
    lease.release()


def test_the_heartbeat_renews_a_held_lease(store):
    ref = store.ref("d", "unit", KEY)
    lease = claim(store, ref, ttl_s=0.4)
    first = json.loads(store.fs.cat_file(lease.path))["expires_at"]
    time.sleep(0.6)  # longer than the ttl: only the heartbeat keeps it valid
    now = json.loads(store.fs.cat_file(lease.path))
    assert now["expires_at"] > first and now["expires_at"] > time.time()  # still valid past the first ttl
    lease.release()
    assert Holder(**json.loads(store.fs.cat_file(lease.path))).released
