"""The `watch-unlabeled` flow: announce new unlabeled images on a prefix as a Prefect event.

Lists the prefix (local folder or s3://...), compares it with the last listing announced for
that prefix (kept in the store as `landed` artifacts), and for images it has not seen emits
one `selftrain.unlabeled.landed` event whose resource is the prefix; a deployment
trigger turns the event into a re-labeling run of `self-training` for that prefix
(deploy/deployments.py). Images that the dataset's newest teacher has already pseudo-labeled
are not new either. Idempotent: the same listing is announced once; a failed emit records
nothing, so the next watch announces it again.

    python -m flows.watch_unlabeled --dataset deepforest --prefix s3://bucket/unlabeled/ --store s3://bucket/selftrain
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import sys
from collections.abc import Iterator

import pyarrow.parquet as pq
from prefect import flow, get_run_logger

from selftrain.stage import get_store, listed_images
from storage.listing import ListedFile, join_sorted, sorted_files
from storage.store import ArtifactRef
from tasks.list_unlabeled import EmptyUnlabeledSet, log_left_out, written_listing

EVENT = "selftrain.unlabeled.landed"
STAGE, VERSION = "landed", 1


def resource(dataset: str, prefix: str) -> dict[str, str]:
    return {
        "prefect.resource.id": f"selftrain.unlabeled.{dataset}",
        "prefect.resource.name": prefix,
        "selftrain.dataset": dataset,
        "selftrain.prefix": prefix,
    }


def latest_teacher_shards(st, dataset: str) -> list[ArtifactRef]:
    """The shards that the newest teacher of ``dataset`` has pseudo-labeled (or whose images it
    skipped as unreadable) in the store: their images are not new to a re-labeling run."""
    from selftrain.stage import PSEUDO_STAGES, ModelNotFound, find_model

    try:
        teacher = find_model(st, dataset, "latest")
    except ModelNotFound:
        return []
    model = f"{teacher.stage}/{teacher.key}"
    shards = []
    for stage in PSEUDO_STAGES:
        for ref in st.list(dataset, stage):
            meta = st.manifest(ref).meta
            if meta.get("model") == model and "/" in str(meta.get("shard", "")):
                shards.append(st.ref(dataset, *meta["shard"].split("/", 1)))
    return list(dict.fromkeys(shards))


def _uri(f: ListedFile) -> str:
    return f.rel


def image_rows(st, refs: list[ArtifactRef], mark: str) -> Iterator[ListedFile]:
    """Every image of the listings or shards ``refs`` as ListedFile(rel=its URI, uri=``mark``, size)."""
    return listed_images(st, refs, "image_uri", [mark] * len(refs))


@flow(name="watch-unlabeled", log_prints=True)
def watch_unlabeled(dataset: str, prefix: str, store: str = "runs/store") -> int:
    """Emit `selftrain.unlabeled.landed` for images under ``prefix`` not announced before; returns their number.

    New: listed now, but neither in the last listing announced for ``prefix`` nor pseudo-labeled
    by the dataset's newest teacher (same URI and size). The listing streams to a temporary
    file; it and those are sorted by URI on disk and merged (storage.listing): memory does not
    grow with the pool. Files left out of the listing (hidden, names not UTF-8) are warned
    about once per new listing, not on every watch; a prefix with no image left is a warning
    and announces nothing (a missing prefix is an error)."""
    from prefect.events import emit_event

    log = get_run_logger()
    prefix = prefix if "://" in prefix else os.path.abspath(prefix)
    st = get_store(store if "://" in store else os.path.abspath(store))
    left_out: dict[str, list] = {}
    with contextlib.ExitStack() as stack:
        try:
            path, digest, total = stack.enter_context(written_listing(prefix, left_out=left_out))
        except EmptyUnlabeledSet as exc:
            log.warning("nothing to announce: %s", exc)
            return 0
        ref = st.stage_ref(dataset, STAGE, VERSION, "", {"listing": digest.hexdigest()}, {"prefix": prefix})
        if st.has(ref):
            log.info("listing of %s already announced (%d images)", prefix, total)
            return 0
        log_left_out(prefix, left_out)
        announced = [r for r in st.list(dataset, STAGE) if st.manifest(r).meta.get("prefix") == prefix]
        last = [max(announced, key=lambda r: st.manifest(r).created_at)] if announced else []
        # both sides sorted by URI on disk (a listing is sorted by image id, which need not be
        # the URIs' order: an S3 key with '//' has a normalised id)
        known = sorted_files(
            itertools.chain(
                image_rows(st, last, "announced"), image_rows(st, latest_teacher_shards(st, dataset), "labeled")
            )
        )
        listed = sorted_files(
            ListedFile(rel=row["image_uri"], uri=row["image_id"], size=int(row["size"]))
            for batch in pq.ParquetFile(path).iter_batches()
            for row in batch.to_pylist()
        )
        new, labeled, examples = 0, 0, list[str]()
        for image, matches in join_sorted(listed, known, _uri, _uri):
            if image is None:
                continue
            marks = {f.uri for f in matches if f.size == image.size}
            labeled += "labeled" in marks
            if not marks:
                new += 1
                if len(examples) < 5:
                    examples.append(image.uri)
        if labeled:
            log.info(
                "%d of %d images under %s already have pseudo labels by the latest teacher", labeled, total, prefix
            )
        if new:
            event = emit_event(
                event=EVENT,
                resource=resource(dataset, prefix),
                payload={
                    "prefix": prefix,
                    "dataset": dataset,
                    "store": st.url,  # the re-labeling run labels into the store the watcher looked at
                    "new_images": new,
                    "images": total,
                    "examples": examples,
                },
            )
            if event is None:
                raise RuntimeError("could not emit the event: is PREFECT_API_URL set and the server reachable?")
            log.info("announced %d new images under %s (event %s)", new, prefix, event.id)
        with st.writer(ref, meta={"prefix": prefix, "images": total, "new_images": new}) as w:
            w.put_file("images.parquet", path)
    return new


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
