"""What the dataset builders share: publishing a built folder atomically."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable


def start_build(out_dir: str, digest: str, read_marker: Callable[[str], dict | None]) -> str | None:
    """None when ``out_dir`` already holds the build of ``digest``; else a fresh private build
    folder beside it (to fill, then ``swap_into_place``). A non-empty folder that no build
    wrote is never replaced."""
    ready = read_marker(out_dir)
    if ready is not None and ready.get("digest") == digest:
        return None
    if ready is None and os.path.isdir(out_dir) and os.listdir(out_dir):
        raise FileExistsError(f"{out_dir} exists, is not empty and was not written by prepare(); not replacing it")
    parent, base = os.path.split(out_dir)
    os.makedirs(parent, exist_ok=True)
    build = tempfile.mkdtemp(prefix=f".{base}.tmp-", dir=parent)
    os.chmod(build, 0o755)  # mkdtemp makes it private; the result is an ordinary data folder
    return build


def swap_into_place(build: str, out_dir: str, digest: str, read_marker: Callable[[str], dict | None]) -> None:
    """Replace ``out_dir`` with the finished ``build`` folder by renames: ``out_dir`` is briefly
    absent, never half-written. If someone else put a folder there meanwhile, that is fine
    when its marker (``read_marker(out_dir)``) names the same digest."""
    parent, base = os.path.split(out_dir)
    old = None
    if os.path.lexists(out_dir):
        old = tempfile.mkdtemp(prefix=f".{base}.old-", dir=parent)
        os.rmdir(old)
        os.rename(out_dir, old)
    try:
        os.rename(build, out_dir)
    except OSError:
        ready = read_marker(out_dir)
        if ready is None or ready.get("digest") != digest:
            raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
