"""The report's pseudo-mask reader: one mask at a time through each shard's index, each shard
file opened once when read in shard order."""

from __future__ import annotations

import numpy as np
import pytest

from selftrain.stage import PseudoMaskReader
from storage.masks import encode_mask_shard
from storage.schemas import MASK_INDEX, to_parquet_bytes
from storage.store import ArtifactStore


def test_masks_are_read_by_image_id_across_shards_and_in_shard_order(tmp_path, monkeypatch):
    store = ArtifactStore(str(tmp_path))
    refs = []
    for s in range(2):
        ref = store.ref("d", "pseudo_masks", f"{s:032x}")
        items = [(f"img{s}{i}", np.full((4, 5), s * 10 + i, np.uint8)) for i in range(3)]
        data, index = encode_mask_shard(items, "masks.parquet")
        store.write(ref, {"masks.parquet": data, "index.parquet": to_parquet_bytes(index, MASK_INDEX)})
        refs.append(ref)
    opened = []
    real_open = store.open
    monkeypatch.setattr(store, "open", lambda ref, name: opened.append(ref.key) or real_open(ref, name))
    reader = PseudoMaskReader(store, refs)
    assert len(reader) == 6 and "img12" in reader and "nope" not in reader
    order = reader.in_shard_order(["img12", "img01", "img10", "nope", "img00"])
    assert order == ["img00", "img01", "img10", "img12"]  # unknown ids left out
    assert [int(reader[i][0, 0]) for i in order] == [0, 1, 10, 12]
    assert reader["img11"].shape == (4, 5) and int(reader["img11"][0, 0]) == 11
    assert opened == [refs[0].key, refs[1].key]  # each shard opened once for the ordered reads
    reader.close()
    with pytest.raises(KeyError, match="no pseudo mask for image 'nope'"):
        reader["nope"]
