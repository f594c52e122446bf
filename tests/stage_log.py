"""What a stage logs outside a Prefect run, collected for a test's assertions."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator


class _Lines(logging.Handler):
    def __init__(self, level: int):
        super().__init__(level)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextlib.contextmanager
def stage_lines(level: int = logging.INFO) -> Iterator[list[str]]:
    """The messages of ``level`` and above that the standard "selftrain" logger receives while
    the block runs (``selftrain.stage.stage_logger`` outside a flow or task run). The handler is
    attached to that logger itself: Prefect's logging set-up can keep it from propagating to
    pytest's handlers. The logger's level is set with ``setLevel`` (the attribute alone leaves
    its level cache stale) and restored afterwards."""
    lines, logger = _Lines(level), logging.getLogger("selftrain")
    before = logger.level
    logger.addHandler(lines)
    logger.setLevel(level)
    try:
        yield lines.lines
    finally:
        logger.removeHandler(lines)
        logger.setLevel(before)
