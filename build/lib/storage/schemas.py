"""Arrow schemas of the tables the pipeline persists, and their checked (de)serialisation.

Pseudo boxes are one row per kept box; per-image statistics one row per unlabeled image
(skipped images included, with the reason); rankings one row per image. Image ids are
strings (a file's path relative to the unlabeled root, or a COCO id as text), so every
source of images fits.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

PSEUDO_BOXES = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("image_uri", pa.string(), nullable=False),
        pa.field("label", pa.int32(), nullable=False),  # category id of the labeled set
        pa.field("x1", pa.float32(), nullable=False),
        pa.field("y1", pa.float32(), nullable=False),
        pa.field("x2", pa.float32(), nullable=False),
        pa.field("y2", pa.float32(), nullable=False),
        pa.field("score", pa.float32(), nullable=False),
    ],
    metadata={"selftrain.table": "pseudo_boxes", "selftrain.version": "1"},
)


class ImageStatus(StrEnum):
    """What happened to an unlabeled image in a shard (the ``status`` column of the per-image
    statistics). A str enum: stored as its value, equal to it in comparisons."""

    OK = "ok"  # labeled: its pseudo labels are in the shard
    SKIPPED = "skipped"  # not labeled: the ``error`` column says why (unreadable, too thin, ...)


IMAGE_OK, IMAGE_SKIPPED = ImageStatus.OK.value, ImageStatus.SKIPPED.value

_IMAGE_COMMON = [
    pa.field("image_id", pa.string(), nullable=False),
    pa.field("image_uri", pa.string(), nullable=False),
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("status", pa.string(), nullable=False),  # "ok" | "skipped"
    pa.field("error", pa.string()),  # why it was skipped
]

DET_IMAGE_STATS = pa.schema(
    _IMAGE_COMMON
    + [
        pa.field("num_boxes", pa.int32()),
        pa.field("mean_score", pa.float32()),  # null when no box was kept
    ],
    metadata={"selftrain.table": "det_image_stats", "selftrain.version": "1"},
)

SEG_IMAGE_STATS = pa.schema(
    _IMAGE_COMMON
    + [
        pa.field("mean_max_prob", pa.float32()),
        pa.field("ignored_fraction", pa.float32()),  # fraction of pixels set to the ignore label
    ],
    metadata={"selftrain.table": "seg_image_stats", "selftrain.version": "1"},
)

STABILITY = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("image_uri", pa.string(), nullable=False),
        pa.field("stability", pa.float64(), nullable=False),  # s_i, docs/design.md §3.3 (unreadable images absent)
    ],
    metadata={"selftrain.table": "stability", "selftrain.version": "1"},
)

RANKING = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("image_uri", pa.string(), nullable=False),
        pa.field("stability", pa.float64(), nullable=False),  # s_i, docs/design.md §3.3
        pa.field("rank", pa.int32(), nullable=False),  # 0 = most stable
        pa.field("reliable", pa.bool_(), nullable=False),
    ],
    metadata={"selftrain.table": "ranking", "selftrain.version": "1"},
)

MASK_INDEX = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("shard", pa.string(), nullable=False),  # file name of the mask shard
        pa.field("row_group", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
    ],
    metadata={"selftrain.table": "mask_index", "selftrain.version": "1"},
)


class SchemaMismatch(ValueError):
    pass


def _table_name(schema: pa.Schema) -> str:
    name: bytes = (schema.metadata or {}).get(b"selftrain.table", b"table")
    return name.decode()


def table_from_rows(rows: Iterable[Mapping[str, Any]], schema: pa.Schema) -> pa.Table:
    """Build a table of exactly ``schema`` from dict rows; unknown or missing columns are errors."""
    rows = list(rows)
    names = set(schema.names)
    for i, row in enumerate(rows):
        extra = set(row) - names
        missing = {f.name for f in schema if not f.nullable} - set(row)
        if extra or missing:
            raise SchemaMismatch(
                f"{_table_name(schema)} row {i}: unknown columns {sorted(extra)}, missing columns {sorted(missing)}"
            )
    try:
        return pa.Table.from_pylist(rows, schema=schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise SchemaMismatch(f"{_table_name(schema)}: {exc}") from exc


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Check a table against ``schema`` (same columns, castable types, no nulls where forbidden)."""
    if set(table.column_names) != set(schema.names):
        raise SchemaMismatch(
            f"{_table_name(schema)}: columns {sorted(table.column_names)} differ from {sorted(schema.names)}"
        )
    table = table.select(schema.names)
    for field in schema:
        if not field.nullable and table.column(field.name).null_count:
            raise SchemaMismatch(f"{_table_name(schema)}: column {field.name!r} has nulls")
    try:
        return table.cast(schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise SchemaMismatch(f"{_table_name(schema)}: {exc}") from exc


def to_parquet_bytes(table: pa.Table, schema: pa.Schema, **kwargs: Any) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(conform(table, schema), sink, compression="zstd", **kwargs)
    data: bytes = sink.getvalue().to_pybytes()
    return data


def read_parquet(source: bytes | str | BinaryIO, schema: pa.Schema) -> pa.Table:
    """Read a Parquet file (path, bytes or file object) and check it against ``schema``."""
    if isinstance(source, (bytes, bytearray)):
        source = pa.BufferReader(source)
    return conform(pq.read_table(source), schema)


UNLABELED_IMAGES = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),  # path relative to the prefix (or the URL)
        pa.field("image_uri", pa.string(), nullable=False),
        pa.field("size", pa.int64(), nullable=False),
    ],
    metadata={"selftrain.table": "unlabeled_images", "selftrain.version": "1"},
)
