"""Listing and shard planning of a very large unlabeled pool: time and peak memory against the
pool's size (not a test: it prints the growth).

    python -m benchmarks.listing                          # 10k, 100k and 1M keys
    python -m benchmarks.listing --sizes 100000 1000000

The pool is an object-store prefix simulated by an fsspec filesystem (``simpool://``) that
answers the recursive ``find`` an S3 listing makes with N keys (``img/<i>.jpg``, sizes of
100..200 kB) and stores nothing; the rest is the real code path, on a local store: the
``list_unlabeled`` task (listing, sort, content digest, ``images.parquet``) and the
``shard_images`` task (consecutive shards of the flow's default size, each written to the
store with its manifest). Each size runs in a process of its own, so that its peak RSS (the
kernel's ``ru_maxrss``) is its own; the import baseline is subtracted.

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

from fsspec.spec import AbstractFileSystem

from benchmarks import save_results


class SimulatedPool(AbstractFileSystem):
    """A read-only prefix of N image keys: ``simpool://<N>/img/<i:09d>.jpg``."""

    protocol = "simpool"
    root_marker = ""

    def _size(self, path: str) -> int:
        return int(self._strip_protocol(path).split("/", 1)[0])

    def isdir(self, path: str) -> bool:
        return "/" not in self._strip_protocol(path).rstrip("/") or path.rstrip("/").endswith("/img")

    def find(self, path, maxdepth=None, withdirs=False, detail=False, **kwargs):
        n = self._size(path)
        base = self._strip_protocol(path).split("/", 1)[0]
        names = (f"{base}/img/{i:09d}.jpg" for i in range(n))
        if not detail:
            return list(names)
        return {
            name: {"name": name, "size": 100_000 + (i * 7919) % 100_000, "type": "file"} for i, name in enumerate(names)
        }

    def ls(self, path, detail=True, **kwargs):
        raise NotImplementedError("the benchmark lists with find only")


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def one(n: int, store_url: str) -> dict:
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
    return {
        "keys": n,
        "shard_size": shard_size,
        "shards": len(plan.shards),
        "listing_s": t1 - t0,
        "sharding_s": t2 - t1,
        "baseline_rss_mib": baseline,
        "peak_rss_listing_mib": after_listing - baseline,
        "peak_rss_mib": rss_mib() - baseline,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--store", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if args.one is not None:
        print("RESULT " + json.dumps(one(args.one, args.store)), flush=True)
        return 0

    results = []
    for n in args.sizes:
        with tempfile.TemporaryDirectory(prefix="selftrain-bench-listing-") as folder:
            done = subprocess.run(
                [sys.executable, "-m", "benchmarks.listing", "--one", str(n), "--store", os.path.join(folder, "store")],
                cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                capture_output=True,
                text=True,
            )
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode != 0 or not lines:
            raise SystemExit(f"{n} keys failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
        r = json.loads(lines[0][len("RESULT ") :])
        results.append(r)
        print(
            f"{n:>9,d} keys: listing {r['listing_s']:7.2f} s, sharding {r['sharding_s']:7.2f} s "
            f"({r['shards']} shards of {r['shard_size']}); peak RSS above the imports: listing "
            f"{r['peak_rss_listing_mib']:.0f} MiB, with sharding {r['peak_rss_mib']:.0f} MiB",
            flush=True,
        )
    print("\nper 1,000 keys (flat = linear):")
    for r in results:
        k = r["keys"] / 1000
        print(
            f"  {r['keys']:>9,d} keys: {(r['listing_s'] + r['sharding_s']) / k * 1000:6.1f} ms, "
            f"{r['peak_rss_mib'] / k:6.2f} MiB"
        )
    save_results(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
