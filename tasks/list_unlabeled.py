"""List the unlabeled images (a prefix or an explicit list of URLs) into a table."""

from __future__ import annotations

import pyarrow as pa

from selftrain.kinds import kind_of
from selftrain.stage import (
    UNLABELED_STAGE,
    UNLABELED_VERSION,
    done_or_claimed,
    expect,
    get_store,
    log_stage,
    stage_logger,
    stage_task,
)
from storage.keys import digest_json
from storage.listing import IMAGE_SUFFIXES, list_files, url_fs
from storage.schemas import UNLABELED_IMAGES, to_parquet_bytes
from storage.store import ArtifactRef

STAGE, VERSION = UNLABELED_STAGE, UNLABELED_VERSION


class EmptyUnlabeledSet(ValueError):
    pass


def list_images(source: str | list[str]) -> list[dict]:
    """(image_id, image_uri, size) of every image, sorted by id. Content = names and sizes.

    ``source``: a prefix (local folder, symbolic links followed, or any fsspec URL; image_id =
    the path relative to it) or a list of image URLs (image_id = the URL). Raises
    FileNotFoundError for a missing prefix or image, EmptyUnlabeledSet when there is no image.
    """
    rows = []
    if isinstance(source, str):
        try:
            files = list_files(source, IMAGE_SUFFIXES)
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"unlabeled prefix {source} does not exist") from exc
        rows = [{"image_id": f.rel, "image_uri": f.uri, "size": f.size} for f in files]
        where = f"under {source}"
    else:
        for url in source:
            fs, path = url_fs(url)
            try:
                size = int(fs.size(path) or 0)
            except FileNotFoundError as exc:
                raise FileNotFoundError(f"unlabeled image {url} does not exist") from exc
            rows.append({"image_id": url, "image_uri": url, "size": size})
        where = "in the given list"
    if not rows:
        raise EmptyUnlabeledSet(f"the unlabeled set is empty: no images ({', '.join(IMAGE_SUFFIXES)}) {where}")
    ids = [r["image_id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise ValueError("the unlabeled list names the same image twice")
    return sorted(rows, key=lambda r: r["image_id"])


@stage_task("list_unlabeled")
def list_unlabeled(
    store_url: str, dataset: str, source: str | list[str], labeled: ArtifactRef | None = None
) -> ArtifactRef:
    """List the unlabeled images (a prefix at any fsspec URL, or a list of image URLs) with their sizes.

    The listing is content-addressed (URI and size of each image): the same pool gives the same
    key, so an unchanged pool costs nothing downstream. Images of the ``labeled`` set (a
    registered set) are left out - reviewed corrections imported into the labeled set
    (`selftrain import-labels`) are trained on, not pseudo-labeled again."""
    expect("list_unlabeled", "labeled", labeled, "registered set")
    store = get_store(store_url)
    rows = list_images(source)
    if labeled is not None:
        known = kind_of(labeled).image_uris(store, labeled)
        kept = [r for r in rows if r["image_uri"] not in known]
        if len(kept) < len(rows):
            stage_logger().info(
                "list unlabeled: %d of %d images are in the labeled set and are not pseudo-labeled",
                len(rows) - len(kept),
                len(rows),
            )
        if not kept:
            raise EmptyUnlabeledSet(f"every image of the unlabeled set ({len(rows)}) is in the labeled set")
        rows = kept
    ref = store.stage_ref(dataset, STAGE, VERSION, "", {"listing": digest_json(rows)}, {})
    reused = done_or_claimed(store, ref, "list unlabeled")
    if not reused:
        table = pa.Table.from_pylist(rows, schema=UNLABELED_IMAGES)
        store.write(
            ref,
            {"images.parquet": to_parquet_bytes(table, UNLABELED_IMAGES)},
            meta={"source": source if isinstance(source, str) else f"{len(source)} URLs", "num_images": len(rows)},
        )
    log_stage("list unlabeled", ref, reused, detail=f"{len(rows)} images")
    return ref
