"""Prefect settings for the runs this machine's command line starts (``selftrain run``, the demo,
the benchmarks), each with its own temporary Prefect server unless PREFECT_API_URL names one.

Only defaults: a setting of the environment (or of the Prefect profile, for the ones Prefect
reads from it) wins.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

DEFAULTS = {
    # The temporary server's telemetry service: it would try to reach Prefect's analytics host
    # (nothing beyond the package registries is reachable here) and writes its session to the
    # server's SQLite database while the flow does, which printed a "sqlite3.OperationalError:
    # database is locked" traceback on every `selftrain run`.
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    # A first start creates and migrates the temporary server's database: on a busy 2-core
    # machine that can exceed Prefect's 20 s default.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
}


def use_local_defaults() -> None:
    """Set each of DEFAULTS in ``os.environ`` unless it is set already. Call it before the
    first flow runs (the temporary server reads the environment when it starts)."""
    for name, value in DEFAULTS.items():
        os.environ.setdefault(name, value)


class EarlyServer:
    """Prefect's temporary server (its own ``SubprocessASGIServer``, the one the flow's client
    would start), started in a thread while the command checks the parameters and imports the
    flow and its libraries.

    A run without PREFECT_API_URL starts that server when the flow is called and waits for it
    (about 6 s on a 2-core machine) after importing everything (about 8 s); started here, the
    server's process boots on another core meanwhile (an identical re-run: 20 s -> 15 s).
    :meth:`wait` must return before the flow is called: the client then finds the server
    running. :meth:`stop` stops it when no flow will run (invalid parameters, an error), and
    :meth:`stopped_on_signal` on Ctrl-C or SIGTERM before the flow: Prefect registers its own
    stop at exit only once the process exists.
    Does nothing when PREFECT_API_URL names a server or Prefect's ephemeral mode is off. A
    failure to start is left to the flow's own start, which raises it as it would have."""

    def __init__(self) -> None:
        import threading

        from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

        self.server: Any = None  # prefect's SubprocessASGIServer, once the thread made it
        self.cancelled = False
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None
        if not PREFECT_API_URL.value() and PREFECT_SERVER_EPHEMERAL_ENABLED.value():
            from prefect.logging.configuration import ensure_logging_setup

            ensure_logging_setup()  # the server's "Starting temporary server on ..." line is shown
            self.thread = threading.Thread(target=self._start, name="prefect-temporary-server", daemon=True)
            self.thread.start()

    def _start(self) -> None:
        from prefect.server.api.server import SubprocessASGIServer

        with self.lock:
            if self.cancelled:
                return
            server = self.server = SubprocessASGIServer()
        try:
            server.start()
        except Exception:  # noqa: BLE001 - the flow's own start tries again and raises it (or stop() ended it)
            pass

    @contextlib.contextmanager
    def stopped_on_signal(self) -> Iterator[None]:
        """In the block, SIGINT (Ctrl-C) and SIGTERM stop the server's process and end this one at
        once (exit code 130 / 143) instead of raising KeyboardInterrupt: an exception raised by a
        signal handler in the middle of an import can leave a module lock held, and the server's
        thread then waits on it forever (seen under load). The previous handlers are restored
        after the block (the flow's own handling of Ctrl-C is unchanged)."""
        import signal

        def end(signum, frame) -> None:
            self._kill()
            name = signal.Signals(signum).name
            os.write(2, f"selftrain run: {name} before the flow started; the temporary server is stopped\n".encode())
            os._exit(128 + signum)

        previous = {s: signal.signal(s, end) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _kill(self) -> None:
        """Terminate the server's process, from a signal handler: no lock, no logging (the
        process ends right after this)."""
        import subprocess

        self.cancelled = True
        proc = self._launched()
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()

    def _launched(self, grace: float = 2.0):
        """The server's process once the thread launched it, or None: a thread that made its
        server is given ``grace`` seconds to launch the process (a fork after its imports); one
        that has not made it yet never will (``cancelled`` is set first)."""
        import time

        server, deadline = self.server, time.monotonic() + grace
        if server is None or self.thread is None:
            return None
        while server.server_process is None and self.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        return server.server_process

    def wait(self) -> None:
        """Return once the server answers (or its start failed)."""
        if self.thread is not None:
            self.thread.join()

    def stop(self) -> None:
        """Stop the server without waiting for it to answer: terminate its process once it
        exists; before that, keep it from starting."""
        with self.lock:
            self.cancelled = True
        if self._launched(grace=10.0) is not None:
            self.server.stop()
