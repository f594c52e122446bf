"""Leases: one process computes a stage output at a time; the others wait and reuse it.

The store alone already keeps concurrent writers consistent (the first manifest wins), but two
runs started together would both compute the same stage - train the same teacher twice, label
the same shard twice - and share its scratch folder. A lease prevents that. It is an object in
the store next to the output it guards::

    {root}/{dataset}/{stage}/{key}/LEASE-000001.json
        {"owner", "host", "machine", "pid", "nonce", "expires_at", "released"}

* **Taking it**: the next generation ``LEASE-<n+1>`` is created with a conditional write (a hard
  link on a local folder; ``If-None-Match: *`` on S3), so of two processes exactly one succeeds.
  A generation may be created only when the newest one is free: released, expired, or held by a
  process of this machine that no longer runs (a killed run's lease lapses at once on its own
  machine, elsewhere when it expires). "This machine" is the host name, the boot id and the
  PID namespace together, so containers that share a host name never judge each other's
  processes. Generations are never deleted, so a number is never taken twice.
* **Holding it**: a heartbeat thread renews ``expires_at`` every ``ttl / 6`` seconds; a holder
  that stops (SIGKILL, a lost machine) stops renewing and its lease expires after ``ttl``
  (default 180 s). A holder that finds a newer generation (it was presumed dead) logs it; the
  store's first-manifest-wins commit keeps the output consistent even then.
* **Waiting**: a process that finds the newest generation held polls until the output is
  complete (and reuses it) or the lease is free (and takes the next generation).

Why not Prefect's lock manager: Prefect's transaction locks live in one Prefect server (or a
Redis), while the outputs live in the store; the lease sits beside what it guards, so runs of
different Prefect servers, Dask workers and scripts on other machines see the same lease,
with no service to operate beyond the store. Clocks of the machines must agree to within a
fraction of the ttl.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from storage.store import ArtifactRef, ArtifactStore

log = logging.getLogger(__name__)

# A renewal is a LIST and a PUT; on a slow S3 each may take up to about a minute within the
# store's bounded retries, so the ttl leaves room for two failed renewals before it lapses.
LEASE_TTL_S = 180.0
POLL_S = 2.0
_LEASE = re.compile(r"LEASE-(\d{6})\.json$")


def machine_id() -> str:
    """This machine and PID namespace: the host name, the boot id and the PID namespace's
    inode (Linux), so that a PID is only ever judged where it means the same process."""
    parts = [socket.gethostname()]
    for path in ("/proc/sys/kernel/random/boot_id",):
        try:
            with open(path) as f:
                parts.append(f.read().strip())
        except OSError:
            parts.append("?")
    try:
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    except OSError:
        parts.append("?")
    return "/".join(parts)


# leases this process let go of without being able to mark them released (an outage): free
# for this process's own next claim (a Prefect retry), not for others until they expire
_ABANDONED: set[str] = set()


@dataclass(frozen=True)
class Holder:
    """What a lease object says: who holds it, on which host, machine and process, a nonce that
    tells its own object from another's, until when (epoch seconds), and whether it was released."""

    owner: str
    host: str
    pid: int
    expires_at: float
    released: bool = False
    machine: str = ""
    nonce: str = ""

    def is_free(self, now: float | None = None) -> bool:
        """Released, expired, abandoned by this process, or held by a process of this machine
        that no longer runs."""
        if self.released or self.expires_at < (time.time() if now is None else now) or self.nonce in _ABANDONED:
            return True
        if self.machine and self.machine == machine_id():
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return True
            except PermissionError:
                return False
        return False

    def describe(self) -> str:
        left = max(0.0, self.expires_at - time.time())
        return f"{self.owner} (pid {self.pid} on {self.host}, lease valid {left:.0f} s more unless renewed)"


def _generations(store: ArtifactStore, ref: ArtifactRef) -> list[tuple[int, str]]:
    folder = store.key_dir(ref)
    try:
        names = store._guard(f"listing the leases of {ref.uri}", store.fs.ls, folder, detail=False, refresh=True)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        m = _LEASE.search(posixpath.basename(str(name).rstrip("/")))
        if m:
            found.append((int(m.group(1)), posixpath.join(folder, m.group(0))))
    return sorted(found)


def _read(store: ArtifactStore, ref: ArtifactRef, path: str) -> Holder | None:
    try:
        raw = store._guard(f"reading the lease of {ref.uri}", store.fs.cat_file, path)
    except FileNotFoundError:
        return None
    try:
        return Holder(**json.loads(raw))
    except (ValueError, TypeError):  # a foreign or damaged object: treat as free, it is replaced
        log.warning("ignoring an unreadable lease object %s", path)
        return None


class Lease:
    """A held lease; renewed by a heartbeat thread until :meth:`release` (or leaving a ``with``)."""

    def __init__(self, store: ArtifactStore, ref: ArtifactRef, generation: int, holder: Holder, ttl_s: float):
        self.store, self.ref, self.generation, self.holder, self.ttl_s = store, ref, generation, holder, ttl_s
        self.path = posixpath.join(store.key_dir(ref), f"LEASE-{generation:06d}.json")
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._heartbeat, name=f"lease-{ref.key[:8]}", daemon=True)
        self._thread.start()

    def _write(self, holder: Holder) -> None:
        data = json.dumps(asdict(holder)).encode()
        self.store.replace_object(self.path, data, f"renewing the lease of {self.ref.uri}")

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl_s / 6):
            try:
                newest = _generations(self.store, self.ref)
                if newest and newest[-1][0] > self.generation:
                    self.lost = True
                    log.warning(
                        "lease of %s was taken over (presumed expired); the store keeps one result", self.ref.uri
                    )
                    return
                self.holder = Holder(**{**asdict(self.holder), "expires_at": time.time() + self.ttl_s})
                self._write(self.holder)
            except Exception as exc:  # noqa: BLE001 - a missed renewal is retried; expiry is the bound
                log.warning("could not renew the lease of %s: %s", self.ref.uri, exc)

    def release(self) -> None:
        """Stop renewing and mark the lease released (generations are kept: a number is never
        taken twice). When the mark cannot be written, this process's next claim treats the
        lease as free and others wait for its expiry."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join()
        if self.lost:
            return
        try:
            self._write(Holder(**{**asdict(self.holder), "released": True}))
        except Exception as exc:  # noqa: BLE001 - an unreleased lease expires after its ttl
            _ABANDONED.add(self.holder.nonce)
            log.warning("could not release the lease of %s (it expires in %.0f s): %s", self.ref.uri, self.ttl_s, exc)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def claim(
    store: ArtifactStore,
    ref: ArtifactRef,
    *,
    owner: str = "",
    ttl_s: float = LEASE_TTL_S,
    poll_s: float = POLL_S,
    on_wait: Callable[[Holder], None] | None = None,
) -> Lease | None:
    """None when ``ref`` is complete - at once, or after waiting while another process held
    its lease; else a Lease this process now holds: compute ``ref``, commit it, release.

    ``owner`` names the holder for whoever waits (a flow run, a task); ``on_wait`` is called
    once with the holder when this process starts waiting. Raises the store's errors
    (StorageUnavailable...) when the store cannot be read or written."""
    announced = False
    while True:
        if store.has(ref):
            return None
        generations = _generations(store, ref)
        newest = _read(store, ref, generations[-1][1]) if generations else None
        if newest is None or newest.is_free():
            n = (generations[-1][0] if generations else 0) + 1
            holder = Holder(
                owner=owner or f"pid {os.getpid()}",
                host=socket.gethostname(),
                pid=os.getpid(),
                expires_at=time.time() + ttl_s,
                machine=machine_id(),
                nonce=uuid.uuid4().hex,
            )
            path = posixpath.join(store.key_dir(ref), f"LEASE-{n:06d}.json")
            data = json.dumps(asdict(holder)).encode()
            if not store.create_exclusive(path, data, f"taking the lease of {ref.uri}"):
                # another process took generation n - or a retried PUT of ours was refused
                mine = _read(store, ref, path)
                if mine is None or mine.nonce != holder.nonce:
                    time.sleep(min(poll_s, 0.2))
                    continue
            lease = Lease(store, ref, n, holder, ttl_s)
            try:
                if store.has(ref):  # committed by the previous holder just before it let go
                    lease.release()
                    return None
            except BaseException:
                lease.release()
                raise
            return lease
        if not announced and on_wait is not None:
            on_wait(newest)
        announced = True
        time.sleep(poll_s)
