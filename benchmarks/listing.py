"""Listing and shard planning of a very large unlabeled pool: time and peak memory against the
pool's size (not a test: it prints the growth).

    python -m benchmarks.listing                          # 10k, 100k and 1M keys
    python -m benchmarks.listing --sizes 100000 1000000

The pool is an S3 prefix simulated by an s3fs filesystem (``simpool://``) whose ListObjectsV2
pages hold N keys (``img/<i>.jpg``, sizes of 100..200 kB) and nothing else; the rest is the
real code path, on a local store: the ``list_unlabeled`` task (the listing page by page, the
sort in spilled runs, the streamed content digest, ``images.parquet`` written in row groups)
and the ``shard_images`` task (consecutive shards of the flow's default size, read from the
stored listing and written to the store with their manifests one at a time). Each size runs
in a process of its own, so that its peak RSS (the kernel's ``ru_maxrss``) is its own; the
import baseline is subtracted.

With ``--incremental`` each size is followed by an incremental run, in a process of its own:
every shard of the first run is marked as labeled by one labeler (a pseudo-label manifest
each, not timed), then a pool of 1.1 N keys (the same N and 10 % new ones) is listed and
sharded against that labeler's shards, as a re-labeling run does after new images landed;
its time and peak RSS are printed beside the first run's.

Goal (the performance issue): time linear in N (seconds per 1,000 keys flat across sizes) and
memory bounded by a shard, not by the pool.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

from s3fs import S3FileSystem

from benchmarks import save_results


class SimulatedPool(S3FileSystem):
    """A read-only S3 prefix of N image keys, ``simpool://<N>/img/<i:09d>.jpg``: s3fs's own
    listing code path, with ListObjectsV2's pages answered here instead of by a server."""

    protocol = ("simpool",)

    async def _iterdir(self, bucket, max_items=None, delimiter="/", prefix="", versions=False):
        for i in range(int(bucket)):
            yield {"name": f"{bucket}/img/{i:09d}.jpg", "size": 100_000 + (i * 7919) % 100_000, "type": "file"}

    def isdir(self, path) -> bool:
        return self._strip_protocol(path).rstrip("/").count("/") <= 1

    def find(self, path, maxdepth=None, withdirs=False, detail=False, **kwargs):
        raise NotImplementedError("an S3 pool is listed page by page (storage/listing.py), not with find")


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


LABELER = "benchmark-labeler"  # the labeler key the marked shards carry


def mark_labeled(store_url: str, shards: list) -> None:
    """Record every shard as labeled by LABELER, as pseudo_label_shard's manifest does."""
    from storage.store import ArtifactStore

    store = ArtifactStore(store_url)
    for shard in shards:
        ref = store.stage_ref(shard.dataset, "pseudo_boxes", 1, "", {"shard": shard}, {"benchmark": True})
        store.write(ref, {}, meta={"labeler": LABELER, "shard": f"{shard.stage}/{shard.key}"})


def incremental(n: int, store_url: str) -> dict:
    """List 1.1 N keys (simulated: the first N as before) and shard them against the shards
    LABELER labeled: the time and peak RSS of a re-labeling run's listing and planning."""
    import fsspec

    fsspec.register_implementation("simpool", SimulatedPool, clobber=True)
    from flows.params import SelfTrainingParams
    from storage.store import ArtifactStore
    from tasks.list_unlabeled import list_unlabeled
    from tasks.shard_images import shard_images

    shard_size = SelfTrainingParams.model_fields["shard_size"].default
    ArtifactStore(store_url)
    total = n + n // 10
    baseline = rss_mib()
    t0 = time.perf_counter()
    # the pool's bucket names its size, so the URIs differ; shards match on (image id, size)
    listing = list_unlabeled.fn(store_url, "bench", f"simpool://{total}")
    t1 = time.perf_counter()
    plan = shard_images.fn(store_url, listing, shard_size, labeler=LABELER)
    t2 = time.perf_counter()
    assert plan.images == total and plan.reused_shards == -(-n // shard_size), plan
    assert plan.new_images == total - n, plan
    return {
        "keys": total,
        "reused_shards": plan.reused_shards,
        "new_images": plan.new_images,
        "listing_s": t1 - t0,
        "sharding_s": t2 - t1,
        "peak_rss_mib": rss_mib() - baseline,
    }


def one(n: int, store_url: str, mark: bool = False) -> dict:
    import fsspec

    fsspec.register_implementation("simpool", SimulatedPool, clobber=True)
    from flows.params import SelfTrainingParams
    from storage.store import ArtifactStore
    from tasks.list_unlabeled import list_unlabeled
    from tasks.shard_images import shard_images

    shard_size = SelfTrainingParams.model_fields["shard_size"].default
    ArtifactStore(store_url)
    baseline = rss_mib()
    t0 = time.perf_counter()
    listing = list_unlabeled.fn(store_url, "bench", f"simpool://{n}")
    t1 = time.perf_counter()
    after_listing = rss_mib()
    plan = shard_images.fn(store_url, listing, shard_size)
    t2 = time.perf_counter()
    assert plan.images == n and len(plan.shards) == -(-n // shard_size)
    peak = rss_mib() - baseline
    if mark:
        mark_labeled(store_url, plan.shards)
    return {
        "keys": n,
        "shard_size": shard_size,
        "shards": len(plan.shards),
        "listing_s": t1 - t0,
        "sharding_s": t2 - t1,
        "baseline_rss_mib": baseline,
        "peak_rss_listing_mib": after_listing - baseline,
        "peak_rss_mib": peak,
    }


def run_one(*args: str) -> dict:
    """One measurement in a process of its own; its RESULT line."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.listing", *args],
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        capture_output=True,
        text=True,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{args} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return json.loads(lines[0][len("RESULT ") :])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--incremental", action="store_true", help="also time an incremental run (+10 %% keys)")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--then", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--mark", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--store", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if args.one is not None:
        result = one(args.one, args.store, args.mark)
        print("RESULT " + json.dumps(result), flush=True)
        return 0
    if args.then is not None:
        print("RESULT " + json.dumps(incremental(args.then, args.store)), flush=True)
        return 0

    results = []
    for n in args.sizes:
        with tempfile.TemporaryDirectory(prefix="selftrain-bench-listing-") as folder:
            store = os.path.join(folder, "store")
            r = run_one("--one", str(n), "--store", store, *(["--mark"] if args.incremental else []))
            if args.incremental:
                r["incremental"] = run_one("--then", str(n), "--store", store)
        results.append(r)
        print(
            f"{n:>9,d} keys: listing {r['listing_s']:7.2f} s, sharding {r['sharding_s']:7.2f} s "
            f"({r['shards']} shards of {r['shard_size']}); peak RSS above the imports: listing "
            f"{r['peak_rss_listing_mib']:.0f} MiB, with sharding {r['peak_rss_mib']:.0f} MiB",
            flush=True,
        )
        if args.incremental:
            i = r["incremental"]
            print(
                f"{i['keys']:>9,d} keys, incremental: listing {i['listing_s']:7.2f} s, sharding against "
                f"the labeled shards {i['sharding_s']:7.2f} s ({i['reused_shards']} reused, "
                f"{i['new_images']} new images); peak RSS above the imports {i['peak_rss_mib']:.0f} MiB",
                flush=True,
            )
    print("\ntime per 1,000 keys (goal: flat, i.e. linear) and peak memory against the previous size (goal: ~1.0x):")
    for previous, r in zip([None, *results], results):
        k = r["keys"] / 1000
        growth = f"{r['peak_rss_mib'] / previous['peak_rss_mib']:.2f}x" if previous else "-"
        print(
            f"  {r['keys']:>9,d} keys: {(r['listing_s'] + r['sharding_s']) / k * 1000:6.1f} ms per 1,000 keys; "
            f"peak {r['peak_rss_mib']:6.0f} MiB, {growth} the previous size's"
        )
    save_results(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
