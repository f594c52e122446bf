"""Benchmarks: scripts that measure side by side and print ratios (not tests)."""

from __future__ import annotations

import json


def save_results(path: str | None, results) -> None:
    """Write a benchmark's results as JSON to ``path`` (``--json``), when one was given."""
    if path:
        with open(path, "w") as f:
            json.dump(results, f, indent=1)
