"""A real Prefect server on 127.0.0.1 for the integration tests (SQLite, temporary home)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

from tests.processes import stop_group


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrefectServer:
    def __init__(self, home: str):
        self.home = home
        self.port = _free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.ui_url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def env(self) -> dict[str, str]:
        """Environment for processes that talk to this server."""
        env = dict(os.environ)
        env.update(PREFECT_HOME=self.home, PREFECT_API_URL=self.api_url,
                   PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_LOGGING_LEVEL="WARNING")
        return env

    def start(self, timeout: float = 120.0) -> PrefectServer:
        os.makedirs(self.home, exist_ok=True)
        env = self.env()
        env.pop("PREFECT_API_URL")
        # the UI asks the server for its API's address: without these it names port 4200
        env.update(PREFECT_SERVER_API_HOST="127.0.0.1", PREFECT_SERVER_API_PORT=str(self.port),
                   PREFECT_UI_API_URL=self.api_url)
        log = open(os.path.join(self.home, "server.log"), "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prefect server exited with {self.proc.returncode}; see {self.home}/server.log")
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"prefect server not healthy on {self.api_url} after {timeout:.0f}s")

    def stop(self) -> None:
        stop_group(self.proc)
        self.proc = None
