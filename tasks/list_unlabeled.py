"""List the unlabeled images (a prefix or an explicit list of URLs) into a table."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Generator, Iterator

import pyarrow as pa

from selftrain.kinds import kind_of
from selftrain.stage import (
    UNLABELED_STAGE,
    UNLABELED_VERSION,
    done_or_claimed,
    expect,
    get_store,
    log_stage,
    stage_logger,
    stage_task,
)
from storage.keys import JsonListDigest
from storage.listing import IMAGE_SUFFIXES, ArchiveFolder, ListedFile, iter_files, scratch_root, sorted_files, url_fs
from storage.schemas import UNLABELED_IMAGES
from storage.store import ArtifactRef

STAGE, VERSION = UNLABELED_STAGE, UNLABELED_VERSION


class EmptyUnlabeledSet(ValueError):
    pass


def iter_images(source: str | list[str], left_out: dict[str, list] | None = None) -> Iterator[dict]:
    """(image_id, image_uri, size) of every image, sorted by id, as the listing goes: a prefix
    is listed and sorted in bounded memory (storage.listing.sorted_files). Content = names and
    sizes.

    ``source``: a prefix (local folder, symbolic links followed, or any fsspec URL; image_id =
    the path relative to it) or a list of image URLs (image_id = the URL). Raises
    FileNotFoundError for a missing prefix or image, NotADirectoryError for a prefix that is a
    file, EmptyUnlabeledSet when there is no image, ValueError naming an image listed twice.
    Under a prefix, hidden files, names that are not UTF-8 and sub-folders (or files) that
    cannot be read are left out with a warning naming them (:func:`_listable`); given a
    ``left_out`` dict, they are counted there instead (``{why: [count, up to 5 names]}``)
    and the caller decides whether to warn (:func:`log_left_out`: the watcher warns once per
    listing, not every tick).
    """
    if isinstance(source, str):
        unreadable: list[str] = []  # sub-folders the walk could not enter: said, not skipped unsaid
        try:
            files = iter_files(source, IMAGE_SUFFIXES, unreadable)  # checks the prefix exists
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"unlabeled prefix {source} does not exist") from exc
        except ArchiveFolder:
            raise
        except NotADirectoryError as exc:
            raise NotADirectoryError(
                f"unlabeled prefix {source} is a file, not a folder: give the folder that holds the images, "
                "or a list of image URLs"
            ) from exc
        skipped: dict[str, list] = left_out if left_out is not None else {}
        skipped.update({"hidden name": [0], "not UTF-8 name": [0], "cannot be read": [0]})  # why -> [count, names...]
        rows: Generator[dict, None, None] = (
            {"image_id": f.rel, "image_uri": f.uri, "size": f.size} for f in sorted_files(_listable(files, skipped))
        )
        where = f"under {source}"
    else:
        listed: list[dict] = []
        for url in source:
            fs, path = url_fs(url)
            try:
                size = int(fs.size(path) or 0)
            except FileNotFoundError as exc:
                raise FileNotFoundError(f"unlabeled image {url} does not exist") from exc
            listed.append({"image_id": url, "image_uri": url, "size": size})
        rows = (r for r in sorted(listed, key=lambda r: str(r["image_id"])))
        where = "in the given list"
    previous = None
    with contextlib.closing(rows):  # an error or an early stop removes the sort's spilled runs now
        for row in rows:
            if row["image_id"] == previous:
                raise ValueError(f"the unlabeled list names the same image twice: {row['image_id']}")
            previous = row["image_id"]
            yield row
    if isinstance(source, str):
        skipped["cannot be read"] = [len(unreadable), *unreadable[:5]]
    if isinstance(source, str) and left_out is None:
        log_left_out(source, skipped)
    if previous is None:
        raise EmptyUnlabeledSet(f"the unlabeled set is empty: no images ({', '.join(IMAGE_SUFFIXES)}) {where}")


def _listable(files: Iterator[ListedFile], skipped: dict[str, list]) -> Iterator[ListedFile]:
    """The files that can be images of the pool. Left out, and counted in ``skipped``: hidden
    files and files in hidden folders (a name starting with '.': macOS's ``._x.jpg`` metadata,
    thumbnail caches), and names that are not UTF-8 (a file system's bytes that no URI, Parquet
    string or JSON key can hold; ``repr`` of the name kept). ``skipped[why]`` is [count, up to
    5 names]."""

    def skip(why: str, name: str) -> None:
        skipped[why][0] += 1
        if len(skipped[why]) <= 5:
            skipped[why].append(name)

    for f in files:
        try:
            f.uri.encode("utf-8")
        except UnicodeEncodeError:  # checked first: such a name cannot be logged as it is
            skip("not UTF-8 name", repr(f.rel))
            continue
        if any(part.startswith(".") for part in f.rel.split("/")):
            skip("hidden name", f.rel)
            continue
        yield f


def log_left_out(source: str, skipped: dict[str, list]) -> None:
    """Warn about the files of ``source`` that :func:`iter_images` left out (``skipped``)."""
    for why, (count, *names) in skipped.items():
        if count:
            stage_logger().warning(
                "list unlabeled: %d file(s) or folder(s) under %s left out (%s), e.g. %s",
                count,
                source,
                why,
                ", ".join(names),
            )


@contextlib.contextmanager
def written_listing(
    source: str | list[str], known: set[str] | frozenset[str] = frozenset(), left_out: dict[str, list] | None = None
) -> Iterator[tuple[str, JsonListDigest, int]]:
    """The listing of ``source`` (:func:`iter_images`, sorted by image id) less the images
    whose URI is in ``known``, streamed into a temporary local Parquet file (UNLABELED_IMAGES,
    ``ROW_GROUP`` rows at a time, in the scratch folder) while its content digest is computed:
    yields (the file's path, the digest - its ``count`` the rows written -, the number of
    images listed before ``known`` was taken out). The file is removed on leaving."""
    import pyarrow.parquet as pq

    digest, total = JsonListDigest(), 0
    with tempfile.TemporaryDirectory(prefix="unlabeled-", dir=scratch_root()) as folder:
        path = os.path.join(folder, "images.parquet")
        with pq.ParquetWriter(path, UNLABELED_IMAGES, compression="zstd") as out:
            batch: list[dict] = []
            for row in iter_images(source, left_out):
                total += 1
                if row["image_uri"] in known:
                    continue
                digest.add(row)
                batch.append(row)
                if len(batch) == ROW_GROUP:
                    out.write_table(pa.Table.from_pylist(batch, schema=UNLABELED_IMAGES))
                    batch = []
            if batch:
                out.write_table(pa.Table.from_pylist(batch, schema=UNLABELED_IMAGES))
        yield path, digest, total


def list_images(source: str | list[str]) -> list[dict]:
    """:func:`iter_images` as a list (small pools: the watcher, tests)."""
    return list(iter_images(source))


ROW_GROUP = 65_536  # rows of the listing written at a time


@stage_task("list_unlabeled")
def list_unlabeled(
    store_url: str, dataset: str, source: str | list[str], labeled: ArtifactRef | None = None
) -> ArtifactRef:
    """List the unlabeled images (a prefix at any fsspec URL, or a list of image URLs) with their sizes.

    The listing is content-addressed (URI and size of each image): the same pool gives the same
    key, so an unchanged pool costs nothing downstream. Images of the ``labeled`` set (a
    registered set) are left out - reviewed corrections imported into the labeled set
    (`selftrain import-labels`) are trained on, not pseudo-labeled again. The listing streams
    through a temporary local Parquet file, ``ROW_GROUP`` rows at a time, while its key is
    computed (storage.keys.JsonListDigest): memory does not grow with the pool."""
    expect("list_unlabeled", "labeled", labeled, "registered set")
    store = get_store(store_url)
    known = kind_of(labeled).image_uris(store, labeled) if labeled is not None else set()
    with written_listing(source, known) as (path, digest, total):
        if digest.count < total:
            stage_logger().info(
                "list unlabeled: %d of %d images are in the labeled set and are not pseudo-labeled",
                total - digest.count,
                total,
            )
        if not digest.count:
            raise EmptyUnlabeledSet(f"every image of the unlabeled set ({total}) is in the labeled set")
        ref = store.stage_ref(dataset, STAGE, VERSION, "", {"listing": digest.hexdigest()}, {})
        reused = done_or_claimed(store, ref, "list unlabeled")
        if not reused:
            meta = {"source": source if isinstance(source, str) else f"{len(source)} URLs", "num_images": digest.count}
            with store.writer(ref, meta=meta) as w:
                w.put_file("images.parquet", path)
    log_stage("list unlabeled", ref, reused, detail=f"{digest.count} images")
    return ref
