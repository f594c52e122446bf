"""Incremental sharding (docs/design.md §4.5): images a labeler already labeled keep their shards; new
images form new shards; a changed or removed image frees its shard's images."""

import pyarrow as pa

from storage.schemas import UNLABELED_IMAGES, to_parquet_bytes
from storage.store import ArtifactStore
from tasks.shard_images import plan


def rows(*ids, size=1):
    return [{"image_id": i, "image_uri": f"/x/{i}", "size": size} for i in ids]


def add_shard(store, name, images, labeler):
    shard = store.ref("d", "shard", name * 32)
    store.write(
        shard,
        {"images.parquet": to_parquet_bytes(pa.Table.from_pylist(images, schema=UNLABELED_IMAGES), UNLABELED_IMAGES)},
    )
    store.write(
        store.ref("d", "pseudo_boxes", name * 31 + "f"),
        {"x": b""},
        meta={"labeler": labeler, "shard": f"shard/{shard.key}"},
    )
    return shard


def test_first_run_shards_everything_in_id_order(tmp_path):
    store = ArtifactStore(str(tmp_path))
    chunks, reused = plan(store, rows("c", "a", "b"), "d", 2, "L")
    assert [[r["image_id"] for r in c] for c in chunks] == [["a", "b"], ["c"]] and reused == []


def test_labeled_shards_are_reused_and_only_new_images_are_sharded(tmp_path):
    store = ArtifactStore(str(tmp_path))
    s2 = add_shard(store, "b", rows("c", "d"), "L")
    s1 = add_shard(store, "a", rows("a", "b"), "L")
    add_shard(store, "c", rows("e"), "other labeler")
    chunks, reused = plan(store, rows("a", "b", "c", "d", "e", "f"), "d", 2, "L")
    assert reused == [s1, s2]  # in the order of their first image
    assert [[r["image_id"] for r in c] for c in chunks] == [["e", "f"]]  # labeled by another labeler: new here
    # an image that changed (size) or disappeared frees the rest of its shard
    chunks, reused = plan(store, rows("a", "b", "c") + rows("d", size=2), "d", 2, "L")
    assert reused == [s1] and [[r["image_id"] for r in c] for c in chunks] == [["c", "d"]]
    chunks, reused = plan(store, rows("a", "b", "c"), "d", 2, "L")
    assert reused == [s1] and [[r["image_id"] for r in c] for c in chunks] == [["c"]]
    # no labeler: plain chunks, nothing reused
    chunks, reused = plan(store, rows("a", "b", "c"), "d", 2, None)
    assert reused == [] and len(chunks) == 2
