"""Split the unlabeled images into fixed-size shards, deterministically."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from selftrain.stage import get_store
from storage.keys import digest_json
from storage.schemas import read_parquet, to_parquet_bytes
from storage.store import ArtifactRef
from tasks.list_unlabeled import UNLABELED_IMAGES

STAGE, VERSION = "shard", 1


def make_shards(rows: list[dict], shard_size: int) -> list[list[dict]]:
    """Consecutive chunks of the id-sorted images: the same images always give the same shards."""
    if shard_size <= 0:
        raise ValueError(f"shard_size must be positive, got {shard_size}")
    rows = sorted(rows, key=lambda r: r["image_id"])
    return [rows[i:i + shard_size] for i in range(0, len(rows), shard_size)]


@task(name="shard_images", cache_policy=NO_CACHE)
def shard_images(store_url: str, unlabeled: ArtifactRef, shard_size: int) -> list[ArtifactRef]:
    import pyarrow as pa

    store = get_store(store_url)
    rows = read_parquet(store.read(unlabeled, "images.parquet"), UNLABELED_IMAGES).to_pylist()
    refs = []
    for i, chunk in enumerate(make_shards(rows, shard_size)):
        # A shard's key is its content, so the same images re-use the same shard artifact.
        ref = store.stage_ref(unlabeled.dataset, STAGE, VERSION, "", {"images": digest_json(chunk)}, {})
        if not store.has(ref):
            table = pa.Table.from_pylist(chunk, schema=UNLABELED_IMAGES)
            store.write(ref, {"images.parquet": to_parquet_bytes(table, UNLABELED_IMAGES)},
                        meta={"index": i, "num_images": len(chunk), "first": chunk[0]["image_id"]})
        refs.append(ref)
    return refs
