"""Command line: ``python -m selftrain.datasets.composed_seg fetch|prepare ...``."""

from __future__ import annotations

import argparse
import sys
import time

from selftrain.datasets.composed_seg.build import prepare, read_split
from selftrain.datasets.composed_seg.sources import SPLITS, default_cache_dir, fetch_sources

# ----------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m selftrain.datasets.composed_seg",
        description="Real-photo segmentation benchmark composed from Debian photo cut-outs and wallpapers.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help="download and cache the source photos (idempotent)")
    fetch.add_argument("--cache", default=None, help=f"cache folder (default: {default_cache_dir()})")
    prep = sub.add_parser("prepare", help="compose the benchmark (fetches the sources first if needed)")
    prep.add_argument("--out", required=True, help="output folder")
    prep.add_argument("--size", type=int, default=128)
    prep.add_argument("--seed", type=int, default=0)
    prep.add_argument("--num-labeled", "--num-labelled", dest="num_labeled", type=int, default=16)
    prep.add_argument("--num-unlabeled", type=int, default=160)
    prep.add_argument("--num-val", type=int, default=48)
    prep.add_argument("--objects-min", type=int, default=1)
    prep.add_argument("--objects-max", type=int, default=3)
    prep.add_argument("--cache", default=None, help=f"source cache folder (default: {default_cache_dir()})")
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    sources = fetch_sources(args.cache)
    if args.command == "fetch":
        print(
            f"{sources.root}: sources ready in {time.perf_counter() - t0:.2f} s "
            f"({', '.join(f'{p} {v}' for p, v in sources.packages.items())})"
        )
        for cls, names in sources.cutouts.items():
            print(f"  {cls:<10} {len(names):>3} cut-outs")
        print(f"  {'background':<10} {len(sources.backgrounds):>3} photos")
        return 0
    t0 = time.perf_counter()
    split = prepare(
        args.out,
        size=args.size,
        seed=args.seed,
        num_labeled=args.num_labeled,
        num_unlabeled=args.num_unlabeled,
        num_val=args.num_val,
        objects_per_image=(args.objects_min, args.objects_max),
        cache_dir=args.cache,
    )
    counts = (read_split(split.root) or {}).get("counts", {})
    print(f"{split.root}: ready in {time.perf_counter() - t0:.2f} s; classes {', '.join(split.classes)}")
    for name in SPLITS:
        n = counts.get(name, {}).get("images", "?")
        print(
            f"  {name:<10} {n:>4} images  img {getattr(split, f'{name}_img_dir')}  "
            f"ann {getattr(split, f'{name}_ann_dir')}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
