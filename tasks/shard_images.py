"""Split the unlabeled images into fixed-size shards, deterministically and incrementally.

Without a labeler, shards are consecutive chunks of the id-sorted images. Given the key of
the model and parameters that will label them (tasks.pseudo_label_shard.labeler_key), the
shards that labeler already labeled are reused untouched as long as all their images are
still listed unchanged, and only the other images - the new ones - form new shards (docs/design.md §4.5):
adding 10% new images costs 10% new shards, never a re-shuffle of the old ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from selftrain.stage import PSEUDO_STAGES, ShardPlan, expect, get_store, listed_images, stage_logger, stage_task
from storage.keys import digest_json
from storage.listing import ListedFile, join_sorted, sorted_files
from storage.schemas import UNLABELED_IMAGES, to_parquet_bytes
from storage.store import ArtifactRef, ArtifactStore

STAGE, VERSION = "shard", 1


def make_shards(rows: list[dict], shard_size: int) -> list[list[dict]]:
    """Consecutive chunks of the id-sorted images: the same images always give the same shards."""
    if shard_size <= 0:
        raise ValueError(f"shard_size must be positive, got {shard_size}")
    rows = sorted(rows, key=lambda r: r["image_id"])
    return [rows[i : i + shard_size] for i in range(0, len(rows), shard_size)]


def labeled_shards(store: ArtifactStore, dataset: str, labeler: str) -> list[ArtifactRef]:
    """The shards already labeled under ``labeler`` (from the pseudo-label manifests)."""
    refs = []
    for stage in PSEUDO_STAGES:
        for ref in store.list(dataset, stage):
            meta = store.manifest(ref).meta
            if meta.get("labeler") == labeler and meta.get("shard"):
                refs.append(store.ref(dataset, *meta["shard"].split("/", 1)))
    return refs


def plan(
    store: ArtifactStore,
    rows: list[dict],
    dataset: str,
    shard_size: int,
    labeler: str | None,
    candidates: list[ArtifactRef] | None = None,
) -> tuple[list[list[dict]], list[ArtifactRef]]:
    """(chunks of images needing new shards, existing shards to reuse) for a listing held in
    memory: :func:`plan_streamed` of the id-sorted ``rows``. ``candidates``: the shards
    ``labeler`` labeled, when the caller has them already (else they are looked up)."""
    if candidates is None:
        candidates = labeled_shards(store, dataset, labeler) if labeler else []
    ordered = sorted(rows, key=lambda r: r["image_id"])
    chunks, reused, _total = plan_streamed(store, lambda: iter(ordered), candidates, shard_size)
    return list(chunks), reused


def plan_streamed(
    store: ArtifactStore, listing: Callable[[], Iterator[dict]], candidates: list[ArtifactRef], shard_size: int
) -> tuple[Iterator[list[dict]], list[ArtifactRef], int]:
    """(chunks of the images needing new shards - an iterator -, the labeled shards to reuse,
    the number of listed images), in memory bounded by a sort run and a few integers per
    candidate shard, not by the pool.

    ``listing``: returns a fresh iterator over the listing's rows (image_id, image_uri, size)
    sorted by image id; it is read twice. ``candidates``: shards already labeled, in the
    order they are preferred. A candidate is reused when every one of its images is listed
    with the same size and none of them lies in a candidate reused before it; the reused
    shards come in the order of their first image (the order a first run made them in), then
    the new ones - the same history always gives the same list. The candidates' rows are
    sorted by image id on disk (storage.listing.sorted_files) and merged with the listing."""
    cands = list(dict.fromkeys(candidates))  # a shard named twice counts once
    n = len(cands)
    valid, seen = [True] * n, [False] * n
    first: list[tuple[str, int]] = [("", 0)] * n  # each candidate's smallest (image id, size)
    neighbours: dict[int, set[int]] = {}  # candidates sharing a listed image
    total = 0
    for row, group in join_sorted(listing(), sorted_files(_candidate_rows(store, cands, range(n))), _id, _rel):
        total += row is not None
        matching = []
        for f in group:
            i = int(f.uri)
            if not seen[i]:
                seen[i], first[i] = True, (f.rel, f.size)
            if row is None or int(row["size"]) != f.size:
                valid[i] = False  # removed or changed: the shard's other images are new again
            else:
                matching.append(i)
        for i in matching:
            neighbours.setdefault(i, set()).update(j for j in matching if j != i)
    taken: set[int] = set()
    for i in range(n):
        if valid[i] and seen[i] and not neighbours.get(i, set()) & taken:
            taken.add(i)
    reused = [cands[i] for i in sorted(taken, key=first.__getitem__)]

    def new_rows() -> Iterator[dict]:
        for row, group in join_sorted(listing(), sorted_files(_candidate_rows(store, cands, sorted(taken))), _id, _rel):
            if row is not None and not any(f.size == int(row["size"]) for f in group):
                yield row

    return _chunked(new_rows(), shard_size), reused, total


def _candidate_rows(store: ArtifactStore, shards: list[ArtifactRef], which: Iterable[int]) -> Iterator[ListedFile]:
    """Every image of the shards numbered ``which``, as ListedFile(rel=image id, uri=the
    shard's number, size) (the sort's input)."""
    which = list(which)
    return listed_images(store, [shards[i] for i in which], "image_id", [str(i) for i in which])


def _id(row: dict) -> str:
    return row["image_id"]


def _rel(f: ListedFile) -> str:
    return f.rel


def _chunked(rows: Iterator[dict], size: int) -> Iterator[list[dict]]:
    chunk: list[dict] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@stage_task("shard_images")
def shard_images(store_url: str, unlabeled: ArtifactRef, shard_size: int, labeler: str | None = None) -> ShardPlan:
    """Split the unlabeled listing into shards of ``shard_size`` images; images ``labeler`` already labeled keep theirs.

    Returns the plan: every shard (reused ones first), how many images are new and how many
    shards were reused. The listing is read a shard at a time and each new shard written as
    it is read; when shards of ``labeler`` exist they are matched against the listing by an
    on-disk sort and merge (:func:`plan_streamed`): memory does not grow with the pool."""
    import pyarrow as pa

    expect("shard_images", "unlabeled", unlabeled, "unlabeled listing")
    if shard_size <= 0:
        raise ValueError(f"shard_size must be positive, got {shard_size}")
    store = get_store(store_url)
    candidates = labeled_shards(store, unlabeled.dataset, labeler) if labeler else []
    chunks: Iterable[list[dict]]
    total: int | None
    if candidates:
        chunks, reused, total = plan_streamed(store, lambda: listing_rows(store, unlabeled), candidates, shard_size)
    else:
        chunks, reused, total = listing_chunks(store, unlabeled, shard_size), [], None
    refs = list(reused)
    new_images = new_shards = 0
    for chunk in chunks:
        new_images, new_shards = new_images + len(chunk), new_shards + 1
        # A shard's key is its content, so the same images re-use the same shard artifact.
        ref = store.stage_ref(unlabeled.dataset, STAGE, VERSION, "", {"images": digest_json(chunk)}, {})
        if not store.has(ref):
            table = pa.Table.from_pylist(chunk, schema=UNLABELED_IMAGES)
            store.write(
                ref,
                {"images.parquet": to_parquet_bytes(table, UNLABELED_IMAGES)},
                meta={"num_images": len(chunk), "first": chunk[0]["image_id"]},
            )
        refs.append(ref)
    if total is None:  # a first run: every listed image went into a new shard
        total = new_images
    if labeler:
        stage_logger().info(
            "%d unlabeled images: %d already labeled in %d shards, %d new in %d new shards",
            total,
            total - new_images,
            len(reused),
            new_images,
            new_shards,
        )
    return ShardPlan(shards=refs, images=total, new_images=new_images, reused_shards=len(reused))


def listing_chunks(store: ArtifactStore, unlabeled: ArtifactRef, shard_size: int) -> Iterator[list[dict]]:
    """Consecutive chunks of ``shard_size`` rows of a stored listing, read a chunk at a time:
    the same chunks as :func:`make_shards`. Raises ValueError when the listing is not sorted."""
    return _chunked(listing_rows(store, unlabeled, shard_size), shard_size)


def listing_rows(store: ArtifactStore, unlabeled: ArtifactRef, batch_size: int = 4096) -> Iterator[dict]:
    """The rows (image_id, image_uri, size) of a stored listing, sorted by image id as
    list_unlabeled writes it, ``batch_size`` rows in memory at a time. Raises ValueError
    naming the listing when it is not sorted."""
    import pyarrow.parquet as pq

    previous = None
    with store.open(unlabeled, "images.parquet") as f:
        for batch in pq.ParquetFile(f).iter_batches(batch_size=batch_size):
            for row in batch.to_pylist():
                if previous is not None and row["image_id"] <= previous:
                    raise ValueError(f"{unlabeled.uri}: the listing is not sorted by image id at {row['image_id']}")
                previous = row["image_id"]
                yield {"image_id": row["image_id"], "image_uri": row["image_uri"], "size": int(row["size"])}
