"""Split the unlabeled images into fixed-size shards, deterministically and incrementally.

Without a labeler, shards are consecutive chunks of the id-sorted images. Given the key of
the model and parameters that will label them (tasks.pseudo_label_shard.labeler_key), the
shards that labeler already labeled are reused untouched as long as all their images are
still listed unchanged, and only the other images - the new ones - form new shards (docs/design.md §4.5):
adding 10% new images costs 10% new shards, never a re-shuffle of the old ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prefect import get_run_logger

from selftrain.stage import PSEUDO_STAGES, ShardPlan, expect, get_store, stage_task
from storage.keys import digest_json
from storage.schemas import UNLABELED_IMAGES, read_parquet, to_parquet_bytes
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
    """(chunks of images needing new shards, existing shards to reuse). ``candidates``: the
    shards ``labeler`` labeled, when the caller has them already (else they are looked up)."""
    current = {(r["image_id"], r["size"]) for r in rows}
    reused: list[tuple[tuple[str, int], ArtifactRef]] = []
    covered: set[tuple[str, int]] = set()
    if candidates is None:
        candidates = labeled_shards(store, dataset, labeler) if labeler else []
    for ref in candidates:
        images = {
            (r["image_id"], r["size"])
            for r in read_parquet(store.read(ref, "images.parquet"), UNLABELED_IMAGES).to_pylist()
        }
        if images and images <= current and not images & covered and ref not in [r for _, r in reused]:
            reused.append((min(images), ref))
            covered |= images
    new = [r for r in rows if (r["image_id"], r["size"]) not in covered]
    # Reused shards in the order of their first image (the order a first run made them in),
    # then the new ones: the same history always gives the same list.
    return make_shards(new, shard_size), [ref for _, ref in sorted(reused, key=lambda item: item[0])]


@stage_task("shard_images")
def shard_images(store_url: str, unlabeled: ArtifactRef, shard_size: int, labeler: str | None = None) -> ShardPlan:
    """Split the unlabeled listing into shards of ``shard_size`` images; images ``labeler`` already labeled keep theirs.

    Returns the plan: every shard (reused ones first), how many images are new and how many
    shards were reused. When no shard of ``labeler`` exists (a first run), the listing is read
    a shard at a time and each shard written as it is read: memory does not grow with the
    pool. Otherwise the listing's (image id, size) pairs are held to match the labeled
    shards against it."""
    import pyarrow as pa

    expect("shard_images", "unlabeled", unlabeled, "unlabeled listing")
    if shard_size <= 0:
        raise ValueError(f"shard_size must be positive, got {shard_size}")
    store = get_store(store_url)
    candidates = labeled_shards(store, unlabeled.dataset, labeler) if labeler else []
    chunks: Iterable[list[dict]]
    if candidates:
        rows = read_parquet(store.read(unlabeled, "images.parquet"), UNLABELED_IMAGES).to_pylist()
        chunks, reused = plan(store, rows, unlabeled.dataset, shard_size, labeler, candidates)
        total = len(rows)
        del rows
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
        get_run_logger().info(
            "%d unlabeled images: %d already labeled in %d shards, %d new in %d new shards",
            total,
            total - new_images,
            len(reused),
            new_images,
            new_shards,
        )
    return ShardPlan(shards=refs, images=total, new_images=new_images, reused_shards=len(reused))


def listing_chunks(store: ArtifactStore, unlabeled: ArtifactRef, shard_size: int) -> Iterator[list[dict]]:
    """Consecutive chunks of ``shard_size`` rows of a stored listing (sorted by image id, as
    list_unlabeled writes it), read a chunk at a time: the same chunks as :func:`make_shards`.
    Raises ValueError when the listing is not sorted."""
    import pyarrow.parquet as pq

    previous = None
    chunk: list[dict] = []
    with store.open(unlabeled, "images.parquet") as f:
        for batch in pq.ParquetFile(f).iter_batches(batch_size=shard_size):
            for row in batch.to_pylist():
                if previous is not None and row["image_id"] <= previous:
                    raise ValueError(f"{unlabeled.uri}: the listing is not sorted by image id at {row['image_id']}")
                previous = row["image_id"]
                chunk.append({"image_id": row["image_id"], "image_uri": row["image_uri"], "size": int(row["size"])})
                if len(chunk) == shard_size:
                    yield chunk
                    chunk = []
    if chunk:
        yield chunk
