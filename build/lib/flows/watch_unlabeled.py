"""The `watch-unlabeled` flow: announce new unlabeled images on a prefix as a Prefect event.

Lists the prefix (local folder or s3://...), compares it with every listing announced before
for that prefix (kept in the store as `landed` artifacts), and for images it has not seen
emits one `selftrain.unlabeled.landed` event whose resource is the prefix; a deployment
trigger turns the event into a re-labeling run of `self-training` for that prefix
(deploy/deployments.py). Images that the dataset's newest teacher has already pseudo-labeled
are not new either. Idempotent: the same listing is announced once; a failed emit records
nothing, so the next watch announces it again.

    python -m flows.watch_unlabeled --dataset deepforest --prefix s3://bucket/unlabeled/ --store s3://bucket/selftrain
"""

from __future__ import annotations

import argparse
import os
import sys

import pyarrow as pa
from prefect import flow, get_run_logger

from selftrain.stage import get_store
from storage.keys import digest_json
from storage.schemas import UNLABELED_IMAGES, read_parquet, to_parquet_bytes
from tasks.list_unlabeled import list_images

EVENT = "selftrain.unlabeled.landed"
STAGE, VERSION = "landed", 1


def resource(dataset: str, prefix: str) -> dict[str, str]:
    return {
        "prefect.resource.id": f"selftrain.unlabeled.{dataset}",
        "prefect.resource.name": prefix,
        "selftrain.dataset": dataset,
        "selftrain.prefix": prefix,
    }


def labeled_by_latest_teacher(st, dataset: str) -> set[tuple[str, int]]:
    """(image URI, size) of every image that the newest teacher of ``dataset`` has pseudo-labeled
    (or skipped as unreadable) in the store: those are not new to a re-labeling run."""
    from selftrain.stage import PSEUDO_STAGES, ModelNotFound, find_model

    try:
        teacher = find_model(st, dataset, "latest")
    except ModelNotFound:
        return set()
    model = f"{teacher.stage}/{teacher.key}"
    out: set[tuple[str, int]] = set()
    for stage in PSEUDO_STAGES:
        for ref in st.list(dataset, stage):
            meta = st.manifest(ref).meta
            if meta.get("model") != model or "/" not in str(meta.get("shard", "")):
                continue
            shard_stage, shard_key = meta["shard"].split("/", 1)
            shard = st.ref(dataset, shard_stage, shard_key)
            out |= {
                (r["image_uri"], r["size"])
                for r in read_parquet(st.read(shard, "images.parquet"), UNLABELED_IMAGES).to_pylist()
            }
    return out


@flow(name="watch-unlabeled", log_prints=True)
def watch_unlabeled(dataset: str, prefix: str, store: str = "runs/store") -> int:
    """Emit `selftrain.unlabeled.landed` for images under ``prefix`` not announced before; returns their number."""
    from prefect.events import emit_event

    log = get_run_logger()
    prefix = prefix if "://" in prefix else os.path.abspath(prefix)
    st = get_store(store if "://" in store else os.path.abspath(store))
    rows = list_images(prefix)
    ref = st.stage_ref(dataset, STAGE, VERSION, "", {"listing": digest_json(rows)}, {"prefix": prefix})
    if st.has(ref):
        log.info("listing of %s already announced (%d images)", prefix, len(rows))
        return 0
    seen = set()
    for old in st.list(dataset, STAGE):
        if st.manifest(old).meta.get("prefix") == prefix:
            seen |= {
                (r["image_uri"], r["size"])
                for r in read_parquet(st.read(old, "images.parquet"), UNLABELED_IMAGES).to_pylist()
            }
    labeled = labeled_by_latest_teacher(st, dataset)
    new = [r for r in rows if (r["image_uri"], r["size"]) not in seen | labeled]
    if labeled:
        log.info(
            "%d of %d images under %s already have pseudo labels by the latest teacher",
            sum((r["image_uri"], r["size"]) in labeled for r in rows),
            len(rows),
            prefix,
        )
    if new:
        event = emit_event(
            event=EVENT,
            resource=resource(dataset, prefix),
            payload={
                "prefix": prefix,
                "dataset": dataset,
                "store": st.url,  # the re-labeling run labels into the store the watcher looked at
                "new_images": len(new),
                "images": len(rows),
                "examples": [r["image_id"] for r in new[:5]],
            },
        )
        if event is None:
            raise RuntimeError("could not emit the event: is PREFECT_API_URL set and the server reachable?")
        log.info("announced %d new images under %s (event %s)", len(new), prefix, event.id)
    st.write(
        ref,
        {"images.parquet": to_parquet_bytes(pa.Table.from_pylist(rows, schema=UNLABELED_IMAGES), UNLABELED_IMAGES)},
        meta={"prefix": prefix, "images": len(rows), "new_images": len(new)},
    )
    return len(new)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--store", default="runs/store")
    args = parser.parse_args(argv)
    n = watch_unlabeled(args.dataset, args.prefix, args.store)
    print(f"{n} new images announced")
    return 0


if __name__ == "__main__":
    sys.exit(main())
