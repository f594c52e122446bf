"""Listing the files under a folder URL: the one listing that registration and the unlabeled
set share.

Local folders are walked with symbolic links followed (a sub-folder that is a link to another
disk is part of the set, as a user expects; a link cycle is visited once), one directory entry
at a time (``os.scandir``); ``s3://`` prefixes are listed page by page (ListObjectsV2, 1,000
keys a page, through s3fs); other fsspec URLs with the filesystem's recursive ``find``, which
holds the whole listing.

:func:`iter_files` streams the files in no particular order; :func:`sorted_files` sorts any
such stream by relative path in bounded memory (sorted runs of ``run_size`` files, spilled to
temporary Parquet files past the first, then merged), so that a pool of millions of images is
listed in memory of the order of a run, not of the pool (benchmarks/listing.py);
:func:`join_sorted` merges two such sorted streams (an incremental run's labeled shards
against its listing, the watcher's listing against the last one it announced).
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import itertools
import os
import posixpath
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import fsspec
from fsspec.implementations.local import LocalFileSystem

L = TypeVar("L")
R = TypeVar("R")


@dataclass(frozen=True)
class ListedFile:
    """One file under a listed folder.

    ``rel``: its path relative to the folder, '/'-separated; ``uri``: a local path or a full
    URL with protocol; ``size``: bytes; ``version``: what the listing says of this version of
    its bytes (:func:`local_version`, :func:`object_version`), '' when it says nothing usable -
    not compared: two listings of one file are equal.
    """

    rel: str
    uri: str
    size: int
    version: str = field(default="", compare=False)


RACY_S = 2.0  # a file changed this recently may change again within its timestamp's granularity
# local file systems whose status-change time (ctime) the kernel sets on every write and no user
# tool sets back: a file's times and inode then name one version of its bytes. Not: network and
# FUSE file systems (attributes cached, times taken from a server or set by its tools), read-only
# images built with fixed times (squashfs), vfat (its ctime is its mtime), overlay (its times and
# inodes come from the layers below, which may be such images).
VERSIONED_LOCAL_FS = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "zfs", "f2fs"})


def mount_types() -> dict[int, str]:
    """File-system type by device number (``st_dev``) of every mount this process sees
    (Linux's /proc/self/mountinfo, major:minor); {} where there is none, so that no local file
    has a version. A device whose mounts disagree on the type, or a file whose ``st_dev`` is
    not listed (a btrfs subvolume's own number), has none either."""
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            lines = f.read().splitlines()
    except OSError:
        return {}
    types: dict[int, str] = {}
    for line in lines:
        left, _, right = line.partition(b" - ")
        fields, after = left.split(), right.split()
        if len(fields) < 3 or not after:
            continue
        major, _, minor = fields[2].partition(b":")
        try:
            dev = os.makedev(int(major), int(minor))
        except ValueError:
            continue
        kind = os.fsdecode(after[0])
        types[dev] = kind if types.get(dev, kind) == kind else ""
    return types


def local_version(st: os.stat_result, now_ns: int | None = None, types: dict[int, str] | None = None) -> str:
    """A local file's version: its modification and status-change times (ns) and inode - where
    its file system (by ``st_dev`` in ``types``, :func:`mount_types`) is one of
    VERSIONED_LOCAL_FS, on which any write changes the status-change time and no user tool
    (``touch -d``, ``cp -p``, ``tar``, ``rsync -a``: the modification time only) sets it back,
    so a file's bytes cannot change under one version - unless it changed within ``RACY_S``
    seconds of ``now_ns`` (default: now), when a second write could land within the same
    timestamp (1 s on ext3 and small-inode ext4): then '' (unknown), as git treats such 'racy'
    entries; '' too on any other file system. Out of scope: file-system images built with
    copied times (``mkfs.ext4 -d``) swapped under one mount point, and ``debugfs``."""
    if (types or {}).get(st.st_dev, "") not in VERSIONED_LOCAL_FS:
        return ""
    now_ns = time.time_ns() if now_ns is None else now_ns
    if max(st.st_mtime_ns, st.st_ctime_ns) > now_ns - int(RACY_S * 1e9):
        return ""
    return f"local:{st.st_dev}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}"


def object_version(info: dict[str, Any]) -> str:
    """An object's version where the store gives a digest of its bytes: an ETag that is an MD5
    (S3 and S3-compatible stores, an object uploaded in one part) or GCS's ``md5Hash``, as
    'md5:<hex>'. A digest of the content, not a mark of a write: whatever happens to the object
    (rewritten, restored, a version undone), one MD5 is one content, and :func:`version_holds`
    checks the bytes read against it (an encrypted object's ETag is 32 hex digits but no MD5:
    it never holds, and nothing is stored). MD5 is not collision-resistant: a map swapped on
    purpose for a crafted one with the same MD5 and size would go unseen. '' otherwise (a
    multipart ETag, an HTTP server's ETag of times and size, a modification time)."""
    import base64
    import binascii

    etag = str(info.get("ETag") or info.get("etag") or "").strip().strip('"').lower()
    if re.fullmatch(r"[0-9a-f]{32}", etag):
        return f"md5:{etag}"
    md5 = info.get("md5Hash")
    if md5:
        try:
            return f"md5:{base64.b64decode(str(md5), validate=True).hex()}"
        except (binascii.Error, ValueError):
            return ""
    return ""


def version_holds(uri: str, version: str, data: bytes, types: dict[int, str] | None = None) -> bool:
    """Whether ``data``, just read from ``uri``, is the version ``version`` a listing gave it:
    an 'md5:' version is the MD5 of the bytes; a local one must still be the file's version
    after the read (a write since the listing changed its status-change time; ``types``: the
    mount table, read when not given). False for ''."""
    if version.startswith("md5:"):
        import hashlib

        return hashlib.md5(data, usedforsecurity=False).hexdigest() == version[4:]
    if version.startswith("local:"):
        try:
            st = os.stat(uri)
        except OSError:
            return False
        return local_version(st, types=mount_types() if types is None else types) == version
    return False


# file systems that hold files rather than wrap another: in their URLs '::' is part of a name
UNCHAINED = frozenset({"file", "local", "s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "memory", "http", "https"})


ARCHIVES = frozenset({"zip", "tar", "libarchive", "sevenzip"})  # file systems inside one file


class ArchiveFolder(NotADirectoryError):
    """A folder inside an archive (zip://, tar://): its files have no URL training can read."""


def url_fs(url: str) -> tuple[Any, str]:
    """(filesystem, path) of any URL, with the store's S3 settings for s3:// (the endpoint from
    SELFTRAIN_S3_ENDPOINT_URL, bounded timeouts and retries), so users' data is read from the
    same service as the store."""
    from storage.store import s3_defaults

    options = s3_defaults({}) if url.split("://", 1)[0] in ("s3", "s3a") else {}
    first = url.split("::", 1)[0]
    protocol = first.split("://", 1)[0] if "://" in first else None
    if "::" in url and (protocol in UNCHAINED or (protocol is None and first not in fsspec.available_protocols())):
        # '::' inside a name (/a/b::c.png, s3://b/a::c.png), not fsspec's chaining, which
        # starts with a wrapping file system ('simplecache::s3://...', 'zip://m::file://x.zip')
        cls = fsspec.get_filesystem_class(protocol or "file")
        return cls(**options), str(cls._strip_protocol(url))
    fs, path = fsspec.core.url_to_fs(url, **options)
    return fs, str(path)


def read_url(url: str) -> bytes:
    """The bytes of one file at any URL or local path (FileNotFoundError when missing)."""
    fs, path = url_fs(url)
    data: bytes = fs.cat_file(path)
    return data


def _walk_local(root: str, unreadable: list[str] | None = None) -> Iterator[ListedFile]:
    """The files under ``root``, one directory entry at a time. Folders are visited in the
    order of ``os.walk`` with sorted sub-folders (depth first), so that of two paths to one
    real folder (a linked folder, a link cycle) the same one is always listed. A sub-folder
    that cannot be read, a file in one that can be listed but not entered, and a link to
    nothing are skipped - and, given ``unreadable``, appended to it with the reason; a file
    gone meanwhile is no file."""
    seen, pending = set(), [root]
    now_ns, types = time.time_ns(), mount_types()
    while pending:
        folder = pending.pop()
        real = os.path.realpath(folder)
        if real in seen:  # a link back up the tree, or a second link: visit each real folder once
            continue
        seen.add(real)
        subfolders = []
        try:
            entries = os.scandir(folder)
        except OSError as exc:
            if folder == root:
                raise
            if unreadable is not None and not isinstance(exc, FileNotFoundError):
                unreadable.append(f"{folder} ({exc.strerror or exc})")
            continue  # an unreadable or vanished sub-folder (lost+found, ...) is skipped, as os.walk does
        with entries:
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=True):
                        subfolders.append(entry.path)
                        continue
                    st = entry.stat(follow_symlinks=True)  # a linked file's size and times
                except FileNotFoundError:  # a dangling link (named), a file gone meanwhile: no file
                    if unreadable is not None and entry.is_symlink():
                        with contextlib.suppress(OSError):  # the link itself gone meanwhile: no file
                            unreadable.append(
                                f"{entry.path} (a link to {os.readlink(entry.path)}, which does not exist)"
                            )
                    continue
                except OSError as exc:  # in a folder listed but not entered (no x permission), a link loop
                    if unreadable is not None and exc.errno != errno.ELOOP:
                        unreadable.append(f"{entry.path} ({exc.strerror or exc})")
                    continue
                rel = os.path.relpath(entry.path, root).replace(os.sep, "/")
                yield ListedFile(
                    rel=rel, uri=entry.path, size=int(st.st_size), version=local_version(st, now_ns, types)
                )
        pending.extend(sorted(subfolders, reverse=True))  # the first in name order is visited next


PAGE = 1000  # keys taken from an object store's listing at a time


def _s3_pages(fs: Any, root: str) -> Iterator[list[dict[str, Any]]]:
    """Every object under ``root`` (bucket/prefix) of an s3fs filesystem, a page at a time:
    ListObjectsV2 without a delimiter, so the whole sub-tree streams (s3fs ``_iterdir``)."""
    from fsspec.asyn import sync

    bucket, key, _ = fs.split_path(root)  # access-point ARNs too
    prefix = key.rstrip("/") + "/" if key.strip("/") else ""
    objects = fs._iterdir(bucket, delimiter="", prefix=prefix)

    async def take(n: int) -> list[dict[str, Any]]:
        page: list[dict[str, Any]] = []
        try:
            while len(page) < n:
                page.append(await objects.__anext__())
        except StopAsyncIteration:
            pass
        return page

    try:
        while True:
            page = sync(fs.loop, take, PAGE)
            if page:
                yield page
            if len(page) < PAGE:
                return
    finally:
        sync(fs.loop, objects.aclose)


def _object_store_files(fs: Any, root: str) -> Iterator[ListedFile]:
    base = root.rstrip("/") or "/"
    from s3fs import S3FileSystem

    if isinstance(fs, S3FileSystem):
        for page in _s3_pages(fs, base):
            for info in page:
                if info.get("type") != "file" or info["name"].endswith("/"):  # folder markers
                    continue
                path = info["name"]
                yield ListedFile(
                    rel=posixpath.relpath(path, base),
                    uri=fs.unstrip_protocol(path),
                    size=int(info.get("size") or 0),
                    version=object_version(info),
                )
        return
    for path, info in fs.find(root, detail=True).items():  # other filesystems: one whole listing
        yield ListedFile(
            rel=posixpath.relpath(path, base),
            uri=fs.unstrip_protocol(path),
            size=int(info.get("size") or 0),
            version=object_version(info),
        )


def iter_files(
    url: str, suffixes: tuple[str, ...] | None = None, unreadable: list[str] | None = None
) -> Iterator[ListedFile]:
    """Every file under ``url`` (recursively), optionally only names ending in one of
    ``suffixes`` (case-insensitive), in no particular order, as the listing goes.

    Raises FileNotFoundError (naming the URL) here, when the folder does not exist, and
    NotADirectoryError when a local path is a file; errors
    while listing (an unreadable root folder, an object store's) are raised during the
    iteration. Sub-folders that cannot be read are skipped, as ``os.walk`` does, and given
    ``unreadable`` (a list) named in it with the reason, as are files that cannot be reached.
    """
    fs, root = url_fs(url)
    protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    if ARCHIVES & set(protocols):  # its files' URIs would lose the archive they are in
        raise ArchiveFolder(
            f"{url} is inside an archive, whose files have no URL that training and inference can "
            "read: unpack it to a folder or an object-store prefix"
        )
    if isinstance(fs, LocalFileSystem):
        root = os.path.abspath(root)
        if os.path.isfile(root):
            raise NotADirectoryError(f"{url} is a file, not a folder")
        if not os.path.isdir(root):
            raise FileNotFoundError(f"folder {url} does not exist")
        files: Iterator[ListedFile] = _walk_local(root, unreadable)
    else:
        fs.invalidate_cache()  # a filesystem object reused in this process may hold old listings
        if not fs.isdir(root):
            raise FileNotFoundError(f"folder {url} does not exist")
        files = _object_store_files(fs, root)
    lowered = tuple(s.lower() for s in suffixes) if suffixes else None
    return files if lowered is None else (f for f in files if f.rel.lower().endswith(lowered))


def scratch_root() -> str:
    """Where a listing's temporary files go: SELFTRAIN_WORK_DIR (storage/settings.py), made if
    missing."""
    from storage.settings import settings

    folder = settings().work_dir
    os.makedirs(folder, exist_ok=True)
    return folder


RUN_SIZE = 65_536  # files sorted in memory at a time by sorted_files
FAN_IN = 16  # sorted runs merged at once; more are merged in passes
ROW_GROUP = 4096  # rows of a spilled run read back at a time


def sorted_files(files: Iterable[ListedFile], run_size: int | None = None) -> Iterator[ListedFile]:
    """``files`` sorted by relative path, in memory of the order of ``run_size`` files (an
    external merge sort): runs of ``run_size`` are sorted in memory; when there is more than
    one, each is written to a temporary Parquet file, and the runs are merged FAN_IN at a time
    (in passes when there are more), each read back ROW_GROUP rows at a time. The files are
    removed when the iteration ends or is abandoned; they lie in the scratch folder
    (:func:`scratch_root`), not in a /tmp that may be memory. ``run_size``: default RUN_SIZE."""
    run_size = RUN_SIZE if run_size is None else run_size
    if run_size < 1:
        raise ValueError(f"run_size must be positive, got {run_size}")
    source = iter(files)
    run: list[ListedFile] = []
    with tempfile.TemporaryDirectory(prefix="listing-", dir=scratch_root()) as folder:
        paths: list[str] = []

        def spill(items: Iterable[ListedFile]) -> None:
            paths.append(_spill(items, os.path.join(folder, f"run-{len(paths):06d}.parquet")))

        for f in source:
            run.append(f)
            if len(run) == run_size:
                spill(sorted(run, key=_rel))
                run = []
        run.sort(key=_rel)
        if not paths:
            yield from run
            return
        if run:
            spill(run)
            run = []
        done = 0  # runs before this index are merged into later ones and removed
        while len(paths) - done > FAN_IN:
            group, done = paths[done : done + FAN_IN], done + FAN_IN
            spill(_merge(group))
            for path in group:
                os.remove(path)
        yield from _merge(paths[done:])


def _rel(f: ListedFile) -> str:
    return f.rel


def _merge(paths: list[str]) -> Iterator[ListedFile]:
    return heapq.merge(*(_read_run(p) for p in paths), key=_rel)


def _spill(items: Iterable[ListedFile], path: str) -> str:
    """Write sorted ``items`` to a Parquet file ROW_GROUP rows at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("rel", pa.string()), ("uri", pa.string()), ("size", pa.int64()), ("version", pa.string())])
    with pq.ParquetWriter(path, schema) as out:
        chunk: list[ListedFile] = []
        for f in itertools.chain(items, [None]):
            if f is not None:
                chunk.append(f)
            if chunk and (f is None or len(chunk) == ROW_GROUP):
                out.write_table(
                    pa.table(
                        {
                            "rel": [c.rel for c in chunk],
                            "uri": [c.uri for c in chunk],
                            "size": [c.size for c in chunk],
                            "version": [c.version for c in chunk],
                        },
                        schema=schema,
                    )
                )
                chunk = []
    return path


def _read_run(path: str) -> Iterator[ListedFile]:
    """A spilled run, one row group (ROW_GROUP rows) in memory at a time."""
    import pyarrow.parquet as pq

    run = pq.ParquetFile(path, pre_buffer=False)
    for i in range(run.num_row_groups):
        cols = run.read_row_group(i, use_threads=False).to_pydict()
        for rel, uri, size, version in zip(cols["rel"], cols["uri"], cols["size"], cols["version"], strict=True):
            yield ListedFile(rel=rel, uri=uri, size=int(size), version=version)


def join_sorted(
    left: Iterable[L], right: Iterable[R], left_key: Callable[[L], str], right_key: Callable[[R], str]
) -> Iterator[tuple[L | None, list[R]]]:
    """Merge two streams sorted by their keys (``left``'s keys unique): (the left item or
    None, the right items of that key) for every key of either, in key order; memory of one
    key's right items. Raises ValueError naming the key where ``left`` is not strictly
    increasing or ``right`` decreases (a merge of unsorted input would silently miss matches)."""

    def checked(items: Iterable[R]) -> Iterator[R]:
        last: str | None = None
        for item in items:
            key = right_key(item)
            if last is not None and key < last:
                raise ValueError(f"join_sorted: the right stream is not sorted by its key at {key!r} (after {last!r})")
            last = key
            yield item

    groups = itertools.groupby(checked(right), key=right_key)
    group = next(groups, None)
    previous: str | None = None
    for item in left:
        key = left_key(item)
        if previous is not None and key <= previous:
            raise ValueError(f"join_sorted: the left stream is not sorted by its key at {key!r} (after {previous!r})")
        previous = key
        while group is not None and group[0] < key:
            yield None, list(group[1])
            group = next(groups, None)
        if group is not None and group[0] == key:
            yield item, list(group[1])
            group = next(groups, None)
        else:
            yield item, []
    while group is not None:
        yield None, list(group[1])
        group = next(groups, None)


def list_files(
    url: str, suffixes: tuple[str, ...] | None = None, unreadable: list[str] | None = None
) -> list[ListedFile]:
    """Every file under ``url`` (recursively), optionally only names ending in one of
    ``suffixes`` (case-insensitive), sorted by relative path, as a list (registration: a
    labeled set's folder). Raises FileNotFoundError (naming the URL) when the folder does not
    exist. What cannot be read is skipped and, given ``unreadable``, named there (the caller
    says so: a labeled set's images must not leave it unsaid). A pool of unlabeled images is
    streamed instead: :func:`sorted_files` of :func:`iter_files`."""
    return list(sorted_files(iter_files(url, suffixes, unreadable)))


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
