"""Listing the files under a folder URL: the one listing that registration and the unlabeled
set share.

Local folders are walked with symbolic links followed (a sub-folder that is a link to another
disk is part of the set, as a user expects; a link cycle is visited once); object stores
(``s3://`` and any other fsspec URL) are listed with the filesystem's recursive ``find``.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem


@dataclass(frozen=True)
class ListedFile:
    """One file under a listed folder.

    ``rel``: its path relative to the folder, '/'-separated; ``uri``: a local path or a full
    URL with protocol; ``size``: bytes.
    """

    rel: str
    uri: str
    size: int


def url_fs(url: str) -> tuple[Any, str]:
    """(filesystem, path) of any URL, with the store's S3 settings for s3:// (the endpoint from
    SELFTRAIN_S3_ENDPOINT_URL, bounded timeouts and retries), so users' data is read from the
    same service as the store."""
    from storage.store import s3_defaults

    options = s3_defaults({}) if url.split("://", 1)[0] in ("s3", "s3a") else {}
    fs, path = fsspec.core.url_to_fs(url, **options)
    return fs, str(path)


def read_url(url: str) -> bytes:
    """The bytes of one file at any URL or local path (FileNotFoundError when missing)."""
    fs, path = url_fs(url)
    data: bytes = fs.cat_file(path)
    return data


def _walk_local(root: str) -> list[ListedFile]:
    out, seen = [], set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:  # a link back up the tree: visit each real folder once
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        for name in files:
            path = os.path.join(folder, name)
            try:
                size = os.stat(path).st_size  # follows a linked file; a dangling link is skipped
            except FileNotFoundError:
                continue
            rel = os.path.relpath(path, root).replace(os.sep, "/")
            out.append(ListedFile(rel=rel, uri=path, size=int(size)))
    return out


def list_files(url: str, suffixes: tuple[str, ...] | None = None) -> list[ListedFile]:
    """Every file under ``url`` (recursively), optionally only names ending in one of
    ``suffixes`` (case-insensitive), sorted by relative path.

    Raises FileNotFoundError (naming the URL) when the folder does not exist.
    """
    fs, root = url_fs(url)
    if isinstance(fs, LocalFileSystem):
        root = os.path.abspath(root)
        if not os.path.isdir(root):
            raise FileNotFoundError(f"folder {url} does not exist")
        files = _walk_local(root)
    else:
        if not fs.isdir(root):
            raise FileNotFoundError(f"folder {url} does not exist")
        base = root.rstrip("/") or "/"
        files = [
            ListedFile(
                rel=posixpath.relpath(path, base), uri=fs.unstrip_protocol(path), size=int(info.get("size") or 0)
            )
            for path, info in fs.find(root, detail=True).items()
        ]
    if suffixes:
        lowered = tuple(s.lower() for s in suffixes)
        files = [f for f in files if f.rel.lower().endswith(lowered)]
    return sorted(files, key=lambda f: f.rel)


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
