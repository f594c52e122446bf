"""A real Label Studio server on 127.0.0.1 for the integration tests, in its own virtual
environment (its pins clash with the stack's): created once under the user cache folder
(~/.cache/selftrain/label-studio-<version>, about 1 GB from PyPI), then reused."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request

from tests.prefect_server import _free_port
from tests.processes import stop_group

VERSION = "1.23.2"  # label-studio; label-studio-sdk comes with it
TOKEN = "0123456789abcdef0123456789abcdef01234567"  # the test user's API token (a legacy token)


def venv() -> str:
    """The Python of Label Studio's own environment, created on first use."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    home = os.path.join(cache, "selftrain", f"label-studio-{VERSION}")
    python = os.path.join(home, "bin", "python")
    ready = os.path.join(home, "READY")
    if not os.path.exists(ready):
        subprocess.run([sys.executable, "-m", "venv", "--clear", home], check=True)
        subprocess.run(
            [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", f"label-studio=={VERSION}"],
            check=True,
            timeout=1800,
        )
        open(ready, "w").close()
    return python


class LabelStudioServer:
    def __init__(self, data_dir: str):
        self.data_dir = data_dir
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = TOKEN
        self.python = venv()
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 600.0) -> LabelStudioServer:
        os.makedirs(self.data_dir, exist_ok=True)
        env = dict(os.environ)
        env.update(
            LABEL_STUDIO_BASE_DATA_DIR=self.data_dir,
            LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN="true",  # the user token below (new organisations disable it)
            LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK="true",
        )
        label_studio = os.path.join(os.path.dirname(self.python), "label-studio")
        cmd = [label_studio, "start", "--no-browser", "--host", "127.0.0.1", "--port", str(self.port)]
        cmd += ["--data-dir", self.data_dir, "--username", "review@example.com", "--password", "selftrain-review"]
        cmd += ["--user-token", self.token]
        log = open(os.path.join(self.data_dir, "server.log"), "ab")
        self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Label Studio exited ({self.proc.returncode}): see {self.data_dir}/server.log")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=3) as r:
                    if b"UP" in r.read():
                        return self
            except OSError:
                pass
            time.sleep(2)
        self.stop()
        raise RuntimeError(f"Label Studio did not answer within {timeout} s: see {self.data_dir}/server.log")

    def run(self, script: str, *args: str) -> None:
        """Run a script in Label Studio's environment (label-studio-sdk) against this server."""
        done = subprocess.run(
            [self.python, script, self.url, self.token, *args], capture_output=True, text=True, timeout=300
        )
        if done.returncode:
            raise RuntimeError(f"{script} failed:\n{done.stdout}\n{done.stderr}"[-4000:])

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc)
            self.proc = None
