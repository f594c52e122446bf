"""Split the unlabeled images into fixed-size shards, deterministically and incrementally.

Without a labeler, shards are consecutive chunks of the id-sorted images. Given the key of
the model and parameters that will label them (tasks.pseudo_label_shard.labeler_key), the
shards that labeler already labeled are reused untouched as long as all their images are
still listed unchanged, and only the other images - the new ones - form new shards (docs/design.md §4.5):
adding 10% new images costs 10% new shards, never a re-shuffle of the old ones.
"""

from __future__ import annotations

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
    store: ArtifactStore, rows: list[dict], dataset: str, shard_size: int, labeler: str | None
) -> tuple[list[list[dict]], list[ArtifactRef]]:
    """(chunks of images needing new shards, existing shards to reuse)."""
    current = {(r["image_id"], r["size"]) for r in rows}
    reused: list[tuple[tuple[str, int], ArtifactRef]] = []
    covered: set[tuple[str, int]] = set()
    for ref in labeled_shards(store, dataset, labeler) if labeler else []:
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
    shards were reused."""
    import pyarrow as pa

    expect("shard_images", "unlabeled", unlabeled, "unlabeled listing")
    store = get_store(store_url)
    rows = read_parquet(store.read(unlabeled, "images.parquet"), UNLABELED_IMAGES).to_pylist()
    chunks, reused = plan(store, rows, unlabeled.dataset, shard_size, labeler)
    refs = list(reused)
    for chunk in chunks:
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
    new_images = sum(len(c) for c in chunks)
    if labeler:
        get_run_logger().info(
            "%d unlabeled images: %d already labeled in %d shards, %d new in %d new shards",
            len(rows),
            len(rows) - new_images,
            len(reused),
            new_images,
            len(chunks),
        )
    return ShardPlan(shards=refs, images=len(rows), new_images=new_images, reused_shards=len(reused))
