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


def reference_plan(store, rows, shards, shard_size):
    """The rule stated plainly, in memory: a shard is reused when all its (id, size) pairs are
    listed and none is covered by a shard reused before it; the rest is new."""
    from storage.schemas import UNLABELED_IMAGES, read_parquet

    current = {(r["image_id"], r["size"]) for r in rows}
    reused, covered = [], set()
    for ref in dict.fromkeys(shards):
        images = {
            (r["image_id"], r["size"])
            for r in read_parquet(store.read(ref, "images.parquet"), UNLABELED_IMAGES).to_pylist()
        }
        if images and images <= current and not images & covered:
            reused.append((min(images), ref))
            covered |= images
    new = sorted((r for r in rows if (r["image_id"], r["size"]) not in covered), key=lambda r: r["image_id"])
    return [new[i : i + shard_size] for i in range(0, len(new), shard_size)], [r for _, r in sorted(reused)]


def test_the_streamed_plan_matches_the_rule_on_random_histories(tmp_path, monkeypatch):
    """Random pools and labeled shards (overlapping, stale, changed sizes, named twice), with
    the on-disk sort forced to spill runs of 3 rows merged 2 at a time: the streamed plan
    gives exactly the reference's shards, reused shards and order."""
    import random

    import storage.listing

    monkeypatch.setattr(storage.listing, "RUN_SIZE", 3)
    monkeypatch.setattr(storage.listing, "FAN_IN", 2)
    monkeypatch.setenv("SELFTRAIN_WORK_DIR", str(tmp_path / "work"))
    rng = random.Random(0)
    for case in range(40):
        store = ArtifactStore(str(tmp_path / f"s{case}"))
        ids = [f"img{n:03d}" for n in rng.sample(range(200), rng.randint(1, 30))]
        listing = [{"image_id": i, "image_uri": f"/x/{i}", "size": rng.choice([1, 1, 1, 2])} for i in ids]
        shards = []
        for s in range(rng.randint(0, 6)):
            pool = ids + ["gone1", "gone2"]
            members = rng.sample(pool, rng.randint(1, min(5, len(pool))))
            images = [{"image_id": i, "image_uri": f"/x/{i}", "size": rng.choice([1, 1, 2])} for i in sorted(members)]
            shards.append(add_shard(store, "abcdef"[s], images, "L"))
        if shards and rng.random() < 0.3:
            shards.append(shards[0])  # found twice (two pseudo-label stages)
        size = rng.randint(1, 4)
        expected = reference_plan(store, listing, shards, size)
        assert plan(store, list(reversed(listing)), "d", size, "L", shards) == expected, case
