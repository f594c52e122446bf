"""Object-storage URLs for OpenMMLab's file I/O.

mmengine reads files through storage backends chosen by URL prefix (local, http, petrel,
...); it has none for ``s3://``. This registers an fsspec-backed backend for the object-store
prefixes, so mmcv's ``LoadImageFromFile`` (and everything else using ``mmengine.fileio``) reads
images straight from the same storage as the artifact store: an image root or an unlabeled
prefix may be ``s3://bucket/...``. Credentials and endpoint come from the environment
(AWS_* variables, ``SELFTRAIN_S3_ENDPOINT_URL``), with the store's bounded retries and timeouts.

Processes: fsspec's asynchronous filesystems (s3fs) refuse to be used in a process other than
the one that created them ("This class is not fork-safe"), and DataLoader workers are forked
from a process that may already have read an image. The filesystem cache is therefore keyed
by process id: a forked worker builds its own filesystem on first use. A spawned worker
imports this module when it unpickles anything of ``selftrain.mm`` (the package imports it),
which registers the backend there too.
"""

from __future__ import annotations

import functools
import os

import fsspec
from mmengine.fileio.backends import BaseStorageBackend, register_backend

PREFIXES = ("s3", "s3a", "gs", "gcs", "az", "abfs", "memory")


@functools.lru_cache(maxsize=16)
def _fs(protocol: str, pid: int):
    """The filesystem of ``protocol`` for process ``pid`` (never shared across processes)."""
    options = {}
    if protocol in ("s3", "s3a"):
        from storage.store import s3_defaults

        options = s3_defaults({})
    # fsspec's own instance cache is bypassed: this cache is the one, and clearing it gives a
    # filesystem that reads the credentials anew.
    fs = fsspec.filesystem(protocol, skip_instance_cache=True, **options)
    if protocol in ("s3", "s3a") and hasattr(fs, "retries"):
        from storage.store import S3FS_RETRIES

        fs.retries = S3FS_RETRIES  # s3fs's own retry loop around botocore's, as in the store
    return fs


def filesystem(protocol: str):
    """This process's fsspec filesystem for ``protocol`` ('s3', 'memory', ...), built once per
    process with the store's S3 defaults (endpoint, timeouts, retries)."""
    return _fs(protocol, os.getpid())


class FsspecBackend(BaseStorageBackend):
    """Read-only mmengine storage backend over fsspec.

    Errors are fsspec's: FileNotFoundError for a missing object, PermissionError when access
    is denied, botocore / aiohttp connection errors when the service cannot be reached.
    """

    def __init__(self, **kwargs):
        pass

    def get(self, filepath) -> bytes:
        filepath = str(filepath)
        return filesystem(filepath.split("://", 1)[0]).cat_file(filepath)

    def get_text(self, filepath, encoding: str = "utf-8") -> str:
        return self.get(filepath).decode(encoding)


register_backend("fsspec", FsspecBackend, force=True, prefixes=list(PREFIXES))
