"""The artifact store: the one place that knows where bytes live (docs/design.md §4).

Layout under one root URL (a local folder by default, ``s3://bucket/prefix`` for real use)::

    {root}/{dataset}/{stage}/{key}/MANIFEST.json      <- written last; its presence = complete
    {root}/{dataset}/{stage}/{key}/{attempt}/{file}   <- the files it names

Every writer writes into its own attempt folder and only then publishes the manifest that
names that folder, with each file's size and sha256. Consequences:

* a crash (or a kill) before the manifest leaves the stage incomplete: ``has()`` is false and
  a re-run redoes it; a half-written attempt folder is never read;
* two writers of the same key never write the same object: each publishes a complete
  attempt, the first manifest wins and a later writer drops its own attempt and reuses it;
* a reader always reads the files of exactly one attempt, checked against the manifest's size
  and sha256: ``read`` and ``get_file`` hash what they return; ``open`` and
  ``parquet_dataset`` (ranged reads) hash each file once per process before its first use. An
  object changed after it was written (a flipped byte) raises CorruptArtifact naming it and is
  never used.

The manifest is one object, created exclusively: on local disks a hard link (atomic, and it
fails if the manifest exists), on S3 a conditional PUT (If-None-Match: *).
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as _dt
import hashlib
import io
import json
import logging
import os
import posixpath
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar, cast
from urllib.parse import urlsplit

import fsspec
from fsspec.implementations.local import LocalFileSystem
from pydantic import BaseModel, ConfigDict

from storage.keys import artifact_key, check_key, check_name

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.dataset as ds

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Recorded as ``created_by`` in the manifests this context commits: the stage tasks set it to
#: their Prefect flow run's id, so that a run can tell what it computed from what it reused
#: (another run may have computed a stage while this one waited for its lease).
CREATED_BY: contextvars.ContextVar[str | None] = contextvars.ContextVar("selftrain_created_by", default=None)

MANIFEST = "MANIFEST.json"
MANIFEST_FORMAT = 1
_CHUNK = 8 * 1024 * 1024
S3FS_RETRIES = 2
# (store URL, path, sha256) of the files this process has hashed whole: ranged readers
# (open, parquet_dataset) verify a file once, not on every open
_VERIFIED: set[tuple[str, str, str]] = set()


# --------------------------------------------------------------------------- errors


class StoreError(RuntimeError):
    """Base class of every error the store raises."""


class ArtifactNotFound(StoreError, FileNotFoundError):
    pass


class CorruptArtifact(StoreError):
    """A committed file does not match its manifest (size or sha256)."""


class StorageUnavailable(StoreError):
    """The storage service could not be reached (after the bounded retries)."""


class StorageAccessDenied(StoreError, PermissionError):
    """The storage service refused the credentials or the permission."""


def classify_error(exc: BaseException) -> type[StoreError] | None:
    """Map fsspec / botocore / OS errors to the store's errors (None = not a storage fault)."""
    names = {c.__name__ for c in type(exc).__mro__}
    text = str(exc)
    if (
        isinstance(exc, PermissionError)
        or "AccessDenied" in text
        or "InvalidAccessKeyId" in text
        or "SignatureDoesNotMatch" in text
        or "Forbidden" in text
    ):
        return StorageAccessDenied
    if names & {
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ConnectionClosedError",
        "ClientConnectorError",
        "ServerDisconnectedError",
        "ConnectionRefusedError",
        "ConnectionResetError",
        "TimeoutError",
        "ClientOSError",
        "ConnectionError",
    }:
        return StorageUnavailable
    if "Could not connect to the endpoint" in text or "Connect timeout" in text:
        return StorageUnavailable
    return None


_classify = classify_error  # the earlier private name


# --------------------------------------------------------------------------- references


class ArtifactRef(BaseModel):
    """A small typed reference to one stage output. This, not data, is what tasks return."""

    model_config = ConfigDict(frozen=True)

    root: str
    dataset: str
    stage: str
    key: str

    @property
    def uri(self) -> str:
        return f"{self.root.rstrip('/')}/{self.dataset}/{self.stage}/{self.key}"

    def __str__(self) -> str:
        return self.uri


class FileEntry(BaseModel):
    model_config = ConfigDict(frozen=True)
    size: int
    sha256: str


class Manifest(BaseModel):
    format: int = MANIFEST_FORMAT
    dataset: str
    stage: str
    key: str
    attempt: str
    files: dict[str, FileEntry]
    meta: dict[str, Any] = {}
    created_at: str
    # who committed it: the Prefect flow run whose task computed it (CREATED_BY), or None
    created_by: str | None = None


def _sha256_of(f: Any) -> tuple[str, int]:
    """(sha256 hex digest, size in bytes) of a readable binary file, read in chunks."""
    digest, size = hashlib.sha256(), 0
    while chunk := f.read(_CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def _check_file_name(name: str) -> str:
    parts = name.split("/")
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts) or name == MANIFEST:
        raise ValueError(f"invalid artifact file name {name!r}: use a relative path without '..'")
    return name


# query parameters that carry a credential: exact names, and the signed-URL families' prefixes
_SECRET_PARAMS = {
    "signature", "sig", "token", "access_token", "id_token", "password", "passwd", "pwd", "secret",
    "client_secret", "api_key", "apikey", "access_key", "accesskey", "secret_key", "secretkey", "awsaccesskeyid",
}  # fmt: skip
_SECRET_PREFIXES = ("x-amz-", "x-goog-")


def _redact(url: str) -> str:
    """``url`` without its user info and with its query string cut (which may hold a secret)."""
    parts = urlsplit(url)
    if "@" in parts.netloc:
        url = url.replace(parts.netloc, "<credentials removed>@" + parts.netloc.rsplit("@", 1)[1])
    return url.split("?", 1)[0] + ("?<query removed>" if parts.query else "")


def check_no_credentials(url: str, what: str) -> str:
    """``url`` itself, unless it carries a credential: user info (``s3://key:secret@bucket``,
    also when the secret holds '/' or '#') or a query parameter of a signed URL or a token
    (``X-Amz-Signature``, ``token``, ``api_key``...). Raises ValueError naming ``what`` and the
    URL without the secret, so that it reaches no log, report, Prefect parameter or manifest;
    credentials belong in the environment or a profile. Local paths are never refused."""
    if "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    authority = rest.split("/", 1)[0]  # up to the first '/', as a secret may hold '/' or '#'
    names = [kv.split("=", 1)[0].lower() for kv in urlsplit(url).query.split("&") if kv]
    secret_param = any(n in _SECRET_PARAMS or n.startswith(_SECRET_PREFIXES) for n in names)
    # "key:sec/ret@bucket": the authority up to the first '/' is "key:sec", a colon with no port
    split_secret = "@" in rest and ":" in authority and not authority.rsplit(":", 1)[1].isdigit()
    if "@" in authority or split_secret or secret_param:
        shown = f"{scheme}://<credentials removed>@{rest.rsplit('@', 1)[1]}" if "@" in rest else _redact(url)
        raise ValueError(
            f"{what} {shown.split('?', 1)[0]!r} carries credentials in the URL; put them in the "
            "environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE) or the "
            "storage options instead, so they never reach logs, reports or Prefect"
        )
    return url


# --------------------------------------------------------------------------- the store


class ArtifactStore:
    """An fsspec-backed content-addressed store under one root URL."""

    def __init__(self, root: str, storage_options: Mapping[str, Any] | None = None):
        parts = urlsplit(check_no_credentials(root, "store root"))
        options = dict(storage_options or {})
        if parts.scheme in ("s3", "s3a"):
            options = s3_defaults(options)
        try:
            self.fs, path = fsspec.core.url_to_fs(root, **options)
        except (ImportError, ValueError) as exc:
            raise StoreError(f"cannot open store root {root!r}: {exc}") from exc
        self.local = isinstance(self.fs, LocalFileSystem)
        if hasattr(self.fs, "retries"):
            self.fs.retries = S3FS_RETRIES  # s3fs's own retry loop around botocore's
        if self.local:
            path = os.path.abspath(path)
            os.makedirs(path, exist_ok=True)
            self.root = path
        else:
            self.root = path.rstrip("/")
        self.url = self.root if self.local else self.fs.unstrip_protocol(self.root)
        if not self.local:
            self._check_reachable()
            _no_expect_continue(self.fs)

    def __repr__(self) -> str:
        return f"ArtifactStore({self.url!r})"

    # ---- paths -----------------------------------------------------------------------

    def ref(self, dataset: str, stage: str, key: str) -> ArtifactRef:
        return ArtifactRef(
            root=self.url, dataset=check_name("dataset", dataset), stage=check_name("stage", stage), key=check_key(key)
        )

    def stage_ref(
        self,
        dataset: str,
        stage: str,
        stage_version: int,
        config_digest: str,
        inputs: Mapping[str, ArtifactRef | str],
        params: Mapping[str, Any],
    ) -> ArtifactRef:
        """The content-addressed reference of a stage output (docs/design.md §4).

        Upstream artifacts enter the key as "stage/key"; other inputs (content digests of
        raw data) as given.
        """
        keyed = {name: f"{v.stage}/{v.key}" if isinstance(v, ArtifactRef) else v for name, v in inputs.items()}
        return self.ref(dataset, stage, artifact_key(stage, stage_version, config_digest, keyed, params))

    def _check_ref(self, ref: ArtifactRef) -> None:
        if ref.root.rstrip("/") != self.url.rstrip("/"):
            raise ValueError(f"artifact {ref.uri} belongs to store {ref.root}, not {self.url}")

    def _dir(self, ref: ArtifactRef) -> str:
        self._check_ref(ref)
        return posixpath.join(self.root, ref.dataset, ref.stage, ref.key)

    def _manifest_path(self, ref: ArtifactRef) -> str:
        return posixpath.join(self._dir(ref), MANIFEST)

    def _file_path(self, ref: ArtifactRef, manifest: Manifest, name: str) -> str:
        if name not in manifest.files:
            raise ArtifactNotFound(f"{ref.uri} has no file {name!r} (it has: {sorted(manifest.files)})")
        return posixpath.join(self._dir(ref), manifest.attempt, name)

    def _corrupt(self, ref: ArtifactRef, name: str, what: str) -> CorruptArtifact:
        return CorruptArtifact(
            f"{ref.uri}/{name} does not match its manifest ({what}): the stored object changed after "
            f"it was written, so it is not used; delete {self._dir(ref)} to recompute that stage"
        )

    def _verify_once(self, ref: ArtifactRef, manifest: Manifest, name: str) -> None:
        """Hash a committed file whole (streamed) against its manifest, once per process.
        Raises CorruptArtifact on a difference."""
        path = self._file_path(ref, manifest, name)
        entry = manifest.files[name]
        if (self.url, path, entry.sha256) in _VERIFIED:
            return
        try:
            with self._guard(f"opening {ref.uri}/{name}", self.fs.open, path, "rb") as f:
                sha, size = self._guard(f"reading {ref.uri}/{name}", _sha256_of, f)
        except FileNotFoundError as exc:
            raise CorruptArtifact(f"{ref.uri}/{name} is named by the manifest but missing") from exc
        if size != entry.size:
            raise self._corrupt(ref, name, f"{size} bytes, the manifest says {entry.size}")
        if sha != entry.sha256:
            raise self._corrupt(ref, name, "sha256 differs")
        _VERIFIED.add((self.url, path, entry.sha256))

    def file_url(self, ref: ArtifactRef, name: str) -> str:
        """Full URL of a committed file, for reports and the UI."""
        path = self._file_path(ref, self.manifest(ref), name)
        return path if self.local else self.fs.unstrip_protocol(path)

    # ---- guarded calls ---------------------------------------------------------------

    def _guard(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except FileNotFoundError:
            raise
        except StoreError:
            raise
        except Exception as exc:  # noqa: BLE001 - translated below, or re-raised
            kind = classify_error(exc)
            if kind is None:
                raise
            hint = ""
            if kind is StorageAccessDenied:
                hint = " (check the credentials and the bucket's permissions)"
            elif kind is StorageUnavailable:
                hint = " (is the storage service running and the endpoint URL right?)"
            raise kind(f"{what} at {self.url}: {type(exc).__name__}: {exc}{hint}") from exc

    def _check_reachable(self) -> None:
        """Fail at start-up, not mid-run, on a wrong endpoint, bucket or credentials."""
        bucket = self.root.split("/", 1)[0]
        try:
            self._guard("checking the store", self.fs.ls, bucket, refresh=True)
        except FileNotFoundError as exc:
            raise StoreError(f"store root {self.url}: bucket {bucket!r} does not exist") from exc

    # ---- reading ---------------------------------------------------------------------

    def _read_manifest(self, ref: ArtifactRef) -> Manifest | None:
        path = self._manifest_path(ref)
        try:
            raw = self._guard(f"reading {ref.uri}/{MANIFEST}", self.fs.cat_file, path)
        except FileNotFoundError:
            return None
        try:
            manifest = Manifest.model_validate_json(raw)
        except ValueError as exc:
            raise CorruptArtifact(f"{ref.uri}/{MANIFEST} is not a valid manifest: {exc}") from exc
        if (manifest.dataset, manifest.stage, manifest.key) != (ref.dataset, ref.stage, ref.key):
            raise CorruptArtifact(f"{ref.uri}/{MANIFEST} describes another artifact")
        return manifest

    def has(self, ref: ArtifactRef) -> bool:
        """True when the stage output is complete (its manifest is present)."""
        return self._read_manifest(ref) is not None

    def manifest(self, ref: ArtifactRef) -> Manifest:
        manifest = self._read_manifest(ref)
        if manifest is None:
            raise ArtifactNotFound(f"{ref.uri} is not complete (no {MANIFEST})")
        return manifest

    def read(self, ref: ArtifactRef, name: str, *, verify: bool = True) -> bytes:
        """A committed file's bytes, checked against the manifest's size and sha256."""
        manifest = self.manifest(ref)
        path = self._file_path(ref, manifest, name)
        try:
            data: bytes = self._guard(f"reading {ref.uri}/{name}", self.fs.cat_file, path)
        except FileNotFoundError as exc:
            raise CorruptArtifact(f"{ref.uri}/{name} is named by the manifest but missing") from exc
        entry = manifest.files[name]
        if len(data) != entry.size:
            raise self._corrupt(ref, name, f"{len(data)} bytes, the manifest says {entry.size}")
        if verify and hashlib.sha256(data).hexdigest() != entry.sha256:
            raise self._corrupt(ref, name, "sha256 differs")
        return data

    def read_json(self, ref: ArtifactRef, name: str) -> Any:
        return json.loads(self.read(ref, name))

    @contextlib.contextmanager
    def open(self, ref: ArtifactRef, name: str, mode: str = "rb", *, verify: bool = True) -> Iterator[BinaryIO]:
        """A read-only file object over a committed file (ranged reads on S3). With ``verify``
        the whole file is hashed against the manifest the first time this process opens it
        (one extra read); CorruptArtifact names a file that differs."""
        if mode != "rb":
            raise ValueError(
                "committed artifacts are immutable: open them with mode 'rb'; write through store.writer(ref)"
            )
        manifest = self.manifest(ref)
        path = self._file_path(ref, manifest, name)
        if verify:
            self._verify_once(ref, manifest, name)
        f = self._guard(f"opening {ref.uri}/{name}", self.fs.open, path, "rb")
        try:
            if f.size != manifest.files[name].size:
                raise self._corrupt(ref, name, f"{f.size} bytes, the manifest says {manifest.files[name].size}")
            yield f
        finally:
            f.close()

    def parquet_dataset(self, refs: Sequence[ArtifactRef], name: str, schema: pa.Schema) -> ds.Dataset:
        """One pyarrow dataset over the Parquet file ``name`` of every artifact in ``refs``,
        read where it lies (local folder or S3, through the store's fsspec filesystem) and
        scanned in record batches: a table of any size is queried without holding it in
        memory (``dataset.to_batches(columns=...)``, ``dataset.count_rows()``, or DuckDB over
        the dataset). Each file is hashed against its manifest (streamed) the first time this
        process makes a view of it; CorruptArtifact names a file that differs. Raises KeyError
        naming an artifact without that file."""
        import pyarrow.dataset as pads
        from pyarrow.fs import FSSpecHandler, PyFileSystem

        paths = []
        for ref in refs:
            manifest = self.manifest(ref)
            if name not in manifest.files:
                raise KeyError(f"{ref.uri} has no file {name!r} (it has {sorted(manifest.files)})")
            paths.append(self._file_path(ref, manifest, name))
        fs = PyFileSystem(FSSpecHandler(self.fs))
        for ref in refs:
            self._verify_once(ref, self.manifest(ref), name)
        return pads.dataset(paths, schema=schema, format="parquet", filesystem=fs)

    def get_file(self, ref: ArtifactRef, name: str, local_path: str) -> str:
        """Copy a committed file to a local path (e.g. a checkpoint for mmengine), hashed
        against the manifest before it is moved into place: CorruptArtifact names a file that
        differs, and nothing is left at ``local_path`` then."""
        manifest = self.manifest(ref)
        path = self._file_path(ref, manifest, name)
        os.makedirs(os.path.dirname(os.path.abspath(local_path)) or ".", exist_ok=True)
        tmp = f"{local_path}.part-{uuid.uuid4().hex[:8]}"
        try:
            try:
                self._guard(f"downloading {ref.uri}/{name}", self.fs.get_file, path, tmp)
            except FileNotFoundError as exc:
                raise CorruptArtifact(f"{ref.uri}/{name} is named by the manifest but missing") from exc
            entry = manifest.files[name]
            size = os.path.getsize(tmp)
            if size != entry.size:
                raise self._corrupt(ref, name, f"{size} bytes, the manifest says {entry.size}")
            with open(tmp, "rb") as f:
                sha, _ = _sha256_of(f)
            if sha != entry.sha256:
                raise self._corrupt(ref, name, "sha256 differs")
            os.replace(tmp, local_path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return local_path

    def list(self, dataset: str | None = None, stage: str | None = None) -> list[ArtifactRef]:
        """Complete artifacts, optionally of one dataset and/or stage (sorted)."""
        pattern = posixpath.join(self.root, dataset or "*", stage or "*", "*", MANIFEST)
        self.fs.invalidate_cache()
        paths = self._guard("listing artifacts", self.fs.glob, pattern)
        refs = []
        for p in sorted(paths):
            ds, st, key = p.rstrip("/").split("/")[-4:-1]
            try:
                refs.append(self.ref(ds, st, key))
            except ValueError:
                log.warning("ignoring a foreign folder in the store: %s", p)
        return refs

    # ---- writing ---------------------------------------------------------------------

    def writer(self, ref: ArtifactRef, meta: Mapping[str, Any] | None = None) -> StageWriter:
        """A writer for one stage output; files become visible only when it commits."""
        self._check_ref(ref)
        return StageWriter(self, ref, dict(meta or {}))

    def write(self, ref: ArtifactRef, files: Mapping[str, bytes], meta: Mapping[str, Any] | None = None) -> Manifest:
        """Write small files in one go and commit them."""
        with self.writer(ref, meta) as w:
            for name, data in files.items():
                w.write_bytes(name, data)
        assert w.manifest is not None  # set by the commit on leaving the block
        return w.manifest

    def _publish_manifest(self, ref: ArtifactRef, manifest: Manifest) -> bool:
        """Publish the manifest unless one exists; False when another writer won."""
        data = manifest.model_dump_json(indent=1).encode("utf-8")
        return self.create_exclusive(self._manifest_path(ref), data, f"committing {ref.uri}")

    def create_exclusive(self, path: str, data: bytes, what: str) -> bool:
        """Create the object ``path`` with ``data`` unless it exists; False when it did (another
        writer won). Local disks: a hard link, atomic and exclusive. S3: a conditional PUT
        (If-None-Match: *), which S3 and SeaweedFS refuse with 412 when the object exists."""
        if self.local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.tmp-{uuid.uuid4().hex[:12]}"
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)  # atomic and exclusive: the first writer wins
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
            return True
        try:
            self._guard(what, self.fs.pipe_file, path, data, mode="create")
        except StoreError:
            raise  # unreachable, access denied...: never taken for "another writer won"
        except FileExistsError:
            return False  # s3fs's translation of 412 Precondition Failed
        except OSError as exc:
            if "PreconditionFailed" in str(exc) or "pre-conditions you specified did not hold" in str(exc):
                return False
            raise
        return True

    def replace_object(self, path: str, data: bytes, what: str) -> None:
        """Write ``path`` whole, replacing it atomically (a reader sees the old or the new bytes)."""
        if self.local:
            tmp = f"{path}.tmp-{uuid.uuid4().hex[:12]}"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        else:
            self._guard(what, self.fs.pipe_file, path, data)

    def key_dir(self, ref: ArtifactRef) -> str:
        """The folder (path under the store's filesystem) of one stage output's key."""
        self._check_ref(ref)
        return self._dir(ref)

    def _remove_attempt(self, ref: ArtifactRef, attempt: str) -> None:
        path = posixpath.join(self._dir(ref), attempt)
        try:
            if self.fs.exists(path):
                self.fs.rm(path, recursive=True)
        except Exception as exc:  # noqa: BLE001 - clean-up is best effort
            log.warning("could not remove abandoned attempt %s: %s", path, exc)


class _HashingWriter(io.RawIOBase):
    """Wraps a writable file, counting bytes and hashing them on the way through."""

    def __init__(self, raw: Any):
        self._raw, self._hash, self.size = raw, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        b = bytes(b)
        self._raw.write(b)
        self._hash.update(b)
        self.size += len(b)
        return len(b)

    def tell(self) -> int:
        return self.size

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()


class StageWriter:
    """Collects the files of one attempt and publishes the manifest on commit.

    Used as a context manager: leaving the block normally commits, an exception abandons
    the attempt (nothing becomes visible). If another writer committed the same key first,
    this attempt is dropped and ``manifest`` is the winner's.
    """

    def __init__(self, store: ArtifactStore, ref: ArtifactRef, meta: dict[str, Any]):
        self.store, self.ref, self.meta = store, ref, meta
        self.attempt = f"a-{uuid.uuid4().hex[:16]}"
        self._files: dict[str, FileEntry] = {}
        self._open: set[str] = set()
        self.manifest: Manifest | None = None
        self.reused = False

    def _path(self, name: str) -> str:
        _check_file_name(name)
        if name in self._files or name in self._open:
            raise ValueError(f"{self.ref.uri}: file {name!r} written twice")
        return posixpath.join(self.store._dir(self.ref), self.attempt, name)

    def write_bytes(self, name: str, data: bytes) -> None:
        path = self._path(name)
        if self.store.local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        self.store._guard(f"writing {self.ref.uri}/{name}", self.store.fs.pipe_file, path, data)
        self._files[name] = FileEntry(size=len(data), sha256=hashlib.sha256(data).hexdigest())

    def write_json(self, name: str, value: Any) -> None:
        self.write_bytes(name, json.dumps(value, indent=1, sort_keys=True).encode("utf-8"))

    @contextlib.contextmanager
    def open(self, name: str) -> Iterator[BinaryIO]:
        """Stream a (large) file; hashed while it is written."""
        path = self._path(name)
        self._open.add(name)
        if self.store.local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        raw = self.store._guard(f"writing {self.ref.uri}/{name}", self.store.fs.open, path, "wb")
        w = _HashingWriter(raw)
        try:
            yield cast(BinaryIO, w)
        finally:
            self.store._guard(f"writing {self.ref.uri}/{name}", w.close)
            self._open.discard(name)
        self._files[name] = FileEntry(size=w.size, sha256=w.sha256)

    def put_file(self, name: str, local_path: str) -> None:
        """Upload a local file (e.g. a checkpoint the Runner wrote)."""
        with self.open(name) as out, open(local_path, "rb") as src:
            while chunk := src.read(_CHUNK):
                out.write(chunk)

    def commit(self) -> Manifest:
        if self._open:
            raise RuntimeError(f"{self.ref.uri}: files still open: {sorted(self._open)}")
        existing = self.store._read_manifest(self.ref)
        if existing is not None:
            # Another writer finished first; its attempt is complete, ours is redundant.
            self.store._remove_attempt(self.ref, self.attempt)
            self.manifest, self.reused = existing, True
            return existing
        manifest = Manifest(
            dataset=self.ref.dataset,
            stage=self.ref.stage,
            key=self.ref.key,
            attempt=self.attempt,
            files=dict(self._files),
            meta=self.meta,
            created_at=_dt.datetime.now(_dt.UTC).isoformat(),
            created_by=CREATED_BY.get(),
        )
        if not self.store._publish_manifest(self.ref, manifest):
            winner = self.store.manifest(self.ref)
            if winner.attempt == self.attempt:  # our own PUT landed, and a retry of it was refused
                self.manifest = winner
                return winner
            self.store._remove_attempt(self.ref, self.attempt)
            self.manifest, self.reused = winner, True
            return self.manifest
        self.manifest = manifest
        return manifest

    def abort(self) -> None:
        self.store._remove_attempt(self.ref, self.attempt)

    def __enter__(self) -> StageWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def s3_defaults(options: Mapping[str, Any]) -> dict[str, Any]:
    """Bounded retries and timeouts for S3, so a dead endpoint fails in seconds, not minutes.

    Credentials come from the standard AWS chain (environment, profile, instance role) unless
    given in ``options``; they are never written anywhere by the store.
    """
    out = dict(options)
    from storage.settings import settings

    endpoint = settings().s3_endpoint_url
    client_kwargs = dict(out.pop("client_kwargs", {}) or {})
    if endpoint and "endpoint_url" not in client_kwargs and "endpoint_url" not in out:
        client_kwargs["endpoint_url"] = endpoint
    out["client_kwargs"] = client_kwargs
    config_kwargs = dict(out.pop("config_kwargs", {}) or {})
    config_kwargs.setdefault("connect_timeout", 5)
    config_kwargs.setdefault("read_timeout", 20)
    config_kwargs.setdefault("retries", {"max_attempts": 3, "mode": "standard"})
    out["config_kwargs"] = config_kwargs
    return out


def _no_expect_continue(fs: Any) -> None:
    """Drop botocore's ``Expect: 100-continue`` on PUTs.

    With it, a server that accepts the connection but never answers (frozen, overloaded)
    makes aiohttp wait forever for the 100 response, ignoring read_timeout: a PUT would hang
    instead of failing. Without it, PUTs obey the timeouts like every other call.
    """
    from botocore.handlers import add_expect_header

    client = getattr(fs, "s3", None)
    if client is not None:
        client.meta.events.unregister("before-call.s3", add_expect_header)
