"""Object-storage URLs for OpenMMLab's file I/O.

mmengine reads files through storage backends chosen by URL prefix (local, http, petrel,
...); it has none for ``s3://``. This registers an fsspec-backed backend for the object-store
prefixes, so mmcv's ``LoadImageFromFile`` (and everything else using ``mmengine.fileio``) reads
images straight from the same storage as the artifact store: an image root or an unlabeled
prefix may be ``s3://bucket/...``. Credentials and endpoint come from the environment
(AWS_* variables, ``SELFTRAIN_S3_ENDPOINT_URL``), with the store's bounded retries and timeouts.
"""

from __future__ import annotations

import functools

import fsspec
from mmengine.fileio.backends import BaseStorageBackend, register_backend

PREFIXES = ("s3", "s3a", "gs", "gcs", "az", "abfs", "memory")


@functools.lru_cache(maxsize=16)
def _fs(protocol: str):
    options = {}
    if protocol in ("s3", "s3a"):
        from storage.store import s3_defaults

        options = s3_defaults({})
    return fsspec.filesystem(protocol, **options)


class FsspecBackend(BaseStorageBackend):
    """Read-only mmengine storage backend over fsspec."""

    def __init__(self, **kwargs):
        pass

    def get(self, filepath) -> bytes:
        filepath = str(filepath)
        return _fs(filepath.split("://", 1)[0]).cat_file(filepath)

    def get_text(self, filepath, encoding: str = "utf-8") -> str:
        return self.get(filepath).decode(encoding)


register_backend("fsspec", FsspecBackend, force=True, prefixes=list(PREFIXES))
