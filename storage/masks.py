"""Mask shards: many label maps per object, each readable alone (docs/design.md §4.4).

A shard is one Parquet file with columns (image_id, height, width, png); every mask is its
own row group, so reading one mask reads the footer and that row group only (ranged reads
on S3) - never the whole shard, and never one object per image on object storage. Masks are
2-D uint8 label maps stored as lossless single-channel PNG: the round trip is bit-exact and
the ignore label 255 is just a value. An index table (storage.schemas.MASK_INDEX) maps
image ids to (shard, row group).

Version 2 shards may carry, per mask, its per-pixel confidence quantised to 8 bits
(``confidence``: a uint8 PNG, value q for a confidence in [(q - 0.5) / 255, (q + 0.5) / 255)),
so that a confidence threshold can be chosen after inference (selftrain/pseudo_labels.py).
Version 1 shards (no such column) read back with confidence None.
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
        pa.field("confidence", pa.binary()),  # uint8 PNG of round(255 * confidence); null: not stored
    ],
    metadata={"selftrain.table": "mask_shard", "selftrain.version": "2"},
)


def quantize_confidence(confidence: np.ndarray) -> np.ndarray:
    """(H, W) confidences in [0, 1] as uint8 ``round(255 * c)`` (values outside are clipped)."""
    return np.rint(np.clip(np.asarray(confidence, dtype=np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)


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


MaskItem = tuple[str, np.ndarray] | tuple[str, np.ndarray, np.ndarray | None]


def encode_mask_shard(items: Iterable[MaskItem], shard: str) -> tuple[bytes, pa.Table]:
    """Pack (image_id, mask) or (image_id, mask, confidence) items into one shard; returns its
    bytes and its index rows. ``confidence``: (H, W) uint8 quantised confidence
    (:func:`quantize_confidence`) of the same shape as the mask, or None."""
    sink = pa.BufferOutputStream()
    index = []
    seen = set()
    with pq.ParquetWriter(sink, MASK_SHARD, compression="none") as writer:
        for row_group, item in enumerate(items):
            image_id, mask = item[0], item[1]
            confidence = item[2] if len(item) == 3 else None
            if image_id in seen:
                raise MaskError(f"image {image_id!r} appears twice in shard {shard}")
            seen.add(image_id)
            h, w = np.asarray(mask).shape[:2]
            png = encode_mask(mask, image_id)
            conf = None
            if confidence is not None:
                if np.asarray(confidence).shape != (h, w) or np.asarray(confidence).dtype != np.uint8:
                    raise MaskError(
                        f"confidence of {image_id!r} must be uint8 of the mask's shape {(h, w)}, got "
                        f"{np.asarray(confidence).dtype} {np.asarray(confidence).shape}"
                    )
                conf = encode_mask(confidence, image_id)
            writer.write_table(
                pa.table(
                    {"image_id": [image_id], "height": [h], "width": [w], "png": [png], "confidence": [conf]},
                    schema=MASK_SHARD,
                )
            )
            index.append({"image_id": image_id, "shard": shard, "row_group": row_group, "height": h, "width": w})
    return sink.getvalue().to_pybytes(), pa.Table.from_pylist(index, schema=MASK_INDEX)


def _confidence(pf: pq.ParquetFile, t: pa.Table) -> np.ndarray | None:
    if "confidence" not in pf.schema_arrow.names:  # a version 1 shard
        return None
    data = t.column("confidence")[0].as_py()
    return None if data is None else decode_mask(data)


def read_mask(
    source: bytes | str | BinaryIO, row_group: int, confidence: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray | None]:
    """Read the mask in one row group of a shard (a file object, path or bytes): the (H, W)
    uint8 label map, or with ``confidence`` the pair (label map, quantised confidence or None)."""
    if isinstance(source, (bytes, bytearray)):
        source = pa.BufferReader(source)
    pf = pq.ParquetFile(source)
    if not 0 <= row_group < pf.num_row_groups:
        raise MaskError(f"row group {row_group} not in shard ({pf.num_row_groups} masks)")
    columns = ["height", "width", "png"] + (
        ["confidence"] if confidence and "confidence" in pf.schema_arrow.names else []
    )
    t = pf.read_row_group(row_group, columns=columns)
    mask = decode_mask(t.column("png")[0].as_py())
    if mask.shape != (t.column("height")[0].as_py(), t.column("width")[0].as_py()):
        raise MaskError("stored mask shape differs from its recorded height/width")
    return (mask, _confidence(pf, t)) if confidence else mask


def iter_mask_shard(source: bytes | str | BinaryIO, confidence: bool = False) -> Iterator[MaskItem]:
    """All (image_id, mask) pairs of a shard - with ``confidence`` (image_id, mask, quantised
    confidence or None) triples - one row group at a time."""
    if isinstance(source, (bytes, bytearray)):
        source = pa.BufferReader(source)
    pf = pq.ParquetFile(source)
    with_conf = confidence and "confidence" in pf.schema_arrow.names
    for i in range(pf.num_row_groups):
        t = pf.read_row_group(i, columns=["image_id", "png"] + (["confidence"] if with_conf else []))
        image_id, mask = t.column("image_id")[0].as_py(), decode_mask(t.column("png")[0].as_py())
        if confidence:
            yield image_id, mask, _confidence(pf, t) if with_conf else None
        else:
            yield image_id, mask


def read_mask_index(source: bytes | str | BinaryIO) -> pa.Table:
    return read_parquet(source, MASK_INDEX)
