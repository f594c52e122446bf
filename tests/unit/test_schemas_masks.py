"""Schemas and the mask-shard codec: exact round trips, clear errors."""

import numpy as np
import pyarrow as pa
import pytest

from storage.masks import (
    IGNORE_LABEL,
    MaskError,
    decode_mask,
    encode_mask,
    encode_mask_shard,
    iter_mask_shard,
    read_mask,
)
from storage.schemas import (
    DET_IMAGE_STATS,
    PSEUDO_BOXES,
    RANKING,
    SchemaMismatch,
    read_parquet,
    table_from_rows,
    to_parquet_bytes,
)

BOX = {
    "image_id": "tiles/a.png",
    "image_uri": "file:///u/tiles/a.png",
    "label": 0,
    "x1": 1.5,
    "y1": 2.0,
    "x2": 10.25,
    "y2": 20.0,
    "score": 0.75,
}


def test_pseudo_boxes_round_trip_through_parquet():
    table = table_from_rows([BOX, dict(BOX, label=3, score=0.5)], PSEUDO_BOXES)
    back = read_parquet(to_parquet_bytes(table, PSEUDO_BOXES), PSEUDO_BOXES)
    assert back.schema.equals(PSEUDO_BOXES, check_metadata=False)
    assert back.to_pylist() == [BOX, dict(BOX, label=3, score=0.5)]  # exact in float32


def test_unknown_and_missing_columns_are_named():
    with pytest.raises(SchemaMismatch, match=r"unknown columns \['colour'\]"):
        table_from_rows([dict(BOX, colour="red")], PSEUDO_BOXES)
    row = dict(BOX)
    del row["score"]
    with pytest.raises(SchemaMismatch, match=r"missing columns \['score'\]"):
        table_from_rows([row], PSEUDO_BOXES)


def test_nulls_are_refused_where_the_schema_forbids_them():
    t = pa.table({n: [None] if n == "score" else [BOX[n]] for n in PSEUDO_BOXES.names})
    with pytest.raises(SchemaMismatch, match="'score' has nulls"):
        to_parquet_bytes(t, PSEUDO_BOXES)


def test_stats_allow_skipped_images_with_a_reason():
    rows = [
        {
            "image_id": "a",
            "image_uri": "u/a",
            "width": 4,
            "height": 3,
            "status": "ok",
            "error": None,
            "num_boxes": 2,
            "mean_score": 0.6,
        },
        {
            "image_id": "b",
            "image_uri": "u/b",
            "width": None,
            "height": None,
            "status": "skipped",
            "error": "cannot decode image",
            "num_boxes": None,
            "mean_score": None,
        },
    ]
    back = read_parquet(
        to_parquet_bytes(table_from_rows(rows, DET_IMAGE_STATS), DET_IMAGE_STATS), DET_IMAGE_STATS
    ).to_pylist()
    assert back[1]["error"] == "cannot decode image" and back[0]["mean_score"] == pytest.approx(0.6)


def test_ranking_schema_types():
    t = table_from_rows([{"image_id": "a", "image_uri": "u", "stability": 1.75, "rank": 0, "reliable": True}], RANKING)
    assert t.schema.field("rank").type == pa.int32() and t.column("stability")[0].as_py() == 1.75


def test_mask_round_trip_is_bit_exact_and_keeps_ignore_label():
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 21, size=(37, 53), dtype=np.uint8)
    mask[5:9, 7:20] = IGNORE_LABEL
    back = decode_mask(encode_mask(mask))
    assert back.dtype == np.uint8 and back.shape == (37, 53)
    assert np.array_equal(back, mask) and (back == 255).sum() == 4 * 13


def test_mask_shard_reads_one_mask_by_row_group():
    masks = [(f"img{i}", np.full((3 + i, 5), i, dtype=np.uint8)) for i in range(4)]
    masks[2][1][0, 0] = 255
    data, index = encode_mask_shard(masks, "masks-000.parquet")
    assert index.to_pylist()[2] == {
        "image_id": "img2",
        "shard": "masks-000.parquet",
        "row_group": 2,
        "height": 5,
        "width": 5,
    }
    got = read_mask(data, 2)
    assert np.array_equal(got, masks[2][1]) and got[0, 0] == 255
    assert [(i, m.shape) for i, m in iter_mask_shard(data)] == [(i, m.shape) for i, m in masks]


@pytest.mark.parametrize(
    "bad,match",
    [
        (np.zeros((2, 2, 3), np.uint8), "must be 2-D"),
        (np.full((2, 2), 300, np.int32), "0..255"),
        (np.zeros((2, 2), np.float32), "0..255"),
        (np.zeros((0, 4), np.uint8), "empty"),
    ],
)
def test_bad_masks_are_refused_naming_the_image(bad, match):
    with pytest.raises(MaskError, match=match):
        encode_mask(bad, "x.png")


def test_duplicate_image_in_shard_is_refused():
    m = np.zeros((2, 2), np.uint8)
    with pytest.raises(MaskError, match="appears twice"):
        encode_mask_shard([("a", m), ("a", m)], "s")
