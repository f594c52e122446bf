"""A real Prefect server on 127.0.0.1 for the integration tests (SQLite, temporary home)."""

from __future__ import annotations

import os
import re
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
        env.update(
            PREFECT_HOME=self.home,
            PREFECT_API_URL=self.api_url,
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_LOGGING_LEVEL="WARNING",
        )
        return env

    def start(self, timeout: float = 120.0) -> PrefectServer:
        os.makedirs(self.home, exist_ok=True)
        env = self.env()
        env.pop("PREFECT_API_URL")
        # the UI asks the server for its API's address: without these it names port 4200
        env.update(
            PREFECT_SERVER_API_HOST="127.0.0.1",
            PREFECT_SERVER_API_PORT=str(self.port),
            PREFECT_UI_API_URL=self.api_url,
            # the scheduler looks for due schedules every 5 s instead of 60 s, so a test
            # sees a schedule fire within seconds (the same service, a shorter loop)
            PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="5",
            PREFECT_SERVER_SERVICES_LATE_RUNS_LOOP_SECONDS="5",
        )
        log = open(os.path.join(self.home, "server.log"), "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
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

    # Prefect's own server loggers, and docket's, which runs the server's perpetual services
    SERVICE_ERROR = re.compile(r"\|\s*(ERROR|CRITICAL)\s*\|\s*(prefect\.server\.[\w.]+|docket\b[\w.]*)")

    def log_size(self) -> int:
        """The server log's current length: pass it to ``service_errors`` to see only what follows."""
        return os.path.getsize(os.path.join(self.home, "server.log"))

    def service_errors(self, since: int = 0) -> list[str]:
        """Errors that the server's own services (scheduler, late runs, automations and
        triggers, event persister, run by docket's worker) wrote to its log after byte
        ``since``: ERROR / CRITICAL lines of prefect.server loggers, and the exception line of
        every traceback (docket logs a failing service's traceback without Prefect's format).
        A failing service is visible only there, never to a client."""
        with open(os.path.join(self.home, "server.log"), "rb") as f:
            f.seek(since)
            lines = f.read().decode(errors="replace").splitlines()
        errors, in_traceback = [], False
        for line in lines:
            if line.startswith("Traceback (most recent call last)"):
                in_traceback = True
            elif in_traceback and line and not line[0].isspace():
                errors.append(f"traceback: {line.strip()}")
                in_traceback = False
            elif self.SERVICE_ERROR.search(line):
                errors.append(line.strip())
        return errors

    def stop(self) -> None:
        stop_group(self.proc)
        self.proc = None
