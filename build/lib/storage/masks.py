"""Mask shards: many label maps per object, each readable alone (docs/design.md §4.4).

A shard is one Parquet file with columns (image_id, height, width, png); every mask is its
own row group, so reading one mask reads the footer and that row group only (ranged reads
on S3) - never the whole shard, and never one object per image on object storage. Masks are
2-D uint8 label maps stored as lossless single-channel PNG: the round trip is bit-exact and
the ignore label 255 is just a value. An index table (storage.schemas.MASK_INDEX) maps
image ids to (shard, row group).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from storage.schemas import MASK_INDEX, read_parquet

IGNORE_LABEL = 255

MASK_SHARD = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("png", pa.binary(), nullable=False),
    ],
    metadata={"selftrain.table": "mask_shard", "selftrain.version": "1"},
)


class MaskError(ValueError):
    pass


def encode_mask(mask: np.ndarray, image_id: str = "?") -> bytes:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise MaskError(f"mask of {image_id!r} must be 2-D (H, W), got shape {mask.shape}")
    if mask.dtype != np.uint8:
        if mask.size and (mask.min() < 0 or mask.max() > 255) or not np.issubdtype(mask.dtype, np.integer):
            raise MaskError(
                f"mask of {image_id!r} must hold integer labels 0..255 (255 = ignore), got dtype {mask.dtype}"
            )
        mask = mask.astype(np.uint8)
    if mask.size == 0:
        raise MaskError(f"mask of {image_id!r} is empty")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(mask), mode="L").save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


def decode_mask(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        if img.mode != "L":
            raise MaskError(f"stored mask has mode {img.mode}, expected L (uint8 labels)")
        return np.array(img, dtype=np.uint8)


def encode_mask_shard(items: Iterable[tuple[str, np.ndarray]], shard: str) -> tuple[bytes, pa.Table]:
    """Pack (image_id, mask) pairs into one shard; returns its bytes and its index rows."""
    sink = pa.BufferOutputStream()
    index = []
    seen = set()
    with pq.ParquetWriter(sink, MASK_SHARD, compression="none") as writer:
        for row_group, (image_id, mask) in enumerate(items):
            if image_id in seen:
                raise MaskError(f"image {image_id!r} appears twice in shard {shard}")
            seen.add(image_id)
            h, w = np.asarray(mask).shape[:2]
            png = encode_mask(mask, image_id)
            writer.write_table(
                pa.table({"image_id": [image_id], "height": [h], "width": [w], "png": [png]}, schema=MASK_SHARD)
            )
            index.append({"image_id": image_id, "shard": shard, "row_group": row_group, "height": h, "width": w})
    return sink.getvalue().to_pybytes(), pa.Table.from_pylist(index, schema=MASK_INDEX)


def read_mask(source: bytes | str | BinaryIO, row_group: int) -> np.ndarray:
    """Read the mask in one row group of a shard (a file object, path or bytes)."""
    if isinstance(source, (bytes, bytearray)):
        source = pa.BufferReader(source)
    pf = pq.ParquetFile(source)
    if not 0 <= row_group < pf.num_row_groups:
        raise MaskError(f"row group {row_group} not in shard ({pf.num_row_groups} masks)")
    t = pf.read_row_group(row_group, columns=["height", "width", "png"])
    mask = decode_mask(t.column("png")[0].as_py())
    if mask.shape != (t.column("height")[0].as_py(), t.column("width")[0].as_py()):
        raise MaskError("stored mask shape differs from its recorded height/width")
    return mask


def iter_mask_shard(source: bytes | str | BinaryIO) -> Iterator[tuple[str, np.ndarray]]:
    """All (image_id, mask) pairs of a shard, one row group at a time."""
    if isinstance(source, (bytes, bytearray)):
        source = pa.BufferReader(source)
    pf = pq.ParquetFile(source)
    for i in range(pf.num_row_groups):
        t = pf.read_row_group(i, columns=["image_id", "png"])
        yield t.column("image_id")[0].as_py(), decode_mask(t.column("png")[0].as_py())


def read_mask_index(source: bytes | str | BinaryIO) -> pa.Table:
    return read_parquet(source, MASK_INDEX)
