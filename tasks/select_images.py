"""The unlabeled images a ranking marks reliable (or unreliable), as an unlabeled listing that
shard_images can shard: ST++ re-labels the unreliable ones with its phase-1 student."""

from __future__ import annotations

import pyarrow as pa

from selftrain.stage import UNLABELED_STAGE as STAGE
from selftrain.stage import UNLABELED_VERSION as VERSION
from selftrain.stage import done_or_claimed, expect, get_store, stage_task
from storage.schemas import RANKING, UNLABELED_IMAGES, read_parquet, to_parquet_bytes
from storage.store import ArtifactRef


@stage_task("select_images")
def select_images(store_url: str, unlabeled: ArtifactRef, ranking: ArtifactRef, reliable: bool) -> ArtifactRef:
    """Select the images of ``unlabeled`` that ``ranking`` calls reliable (or unreliable), as a new listing."""
    expect("select_images", "unlabeled", unlabeled, "unlabeled listing")
    expect("select_images", "ranking", ranking, "ranking")
    store = get_store(store_url)
    wanted = {
        r["image_id"]
        for r in read_parquet(store.read(ranking, "ranking.parquet"), RANKING).to_pylist()
        if r["reliable"] == reliable
    }
    rows = [
        r
        for r in read_parquet(store.read(unlabeled, "images.parquet"), UNLABELED_IMAGES).to_pylist()
        if r["image_id"] in wanted
    ]
    ref = store.stage_ref(
        unlabeled.dataset, STAGE, VERSION, "", {"unlabeled": unlabeled, "ranking": ranking}, {"reliable": reliable}
    )
    if not done_or_claimed(store, ref, "select images"):
        store.write(
            ref,
            {"images.parquet": to_parquet_bytes(pa.Table.from_pylist(rows, schema=UNLABELED_IMAGES), UNLABELED_IMAGES)},
            meta={
                "source": f"{'reliable' if reliable else 'unreliable'} images of {unlabeled.uri}",
                "num_images": len(rows),
            },
        )
    return ref
