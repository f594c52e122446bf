"""The artifact store's contract, run against every backend (local folder, real S3 server).

A backend's test module subclasses StoreContract and provides a ``store`` fixture.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from storage.keys import artifact_key
from storage.masks import encode_mask_shard, read_mask
from storage.schemas import PSEUDO_BOXES, read_parquet, table_from_rows, to_parquet_bytes
from storage.store import MANIFEST, ArtifactNotFound, CorruptArtifact

KEY = artifact_key("unit", 1, "", {}, {"n": 1})
KEY2 = artifact_key("unit", 1, "", {}, {"n": 2})


class StoreContract:
    def test_write_then_read_and_manifest(self, store):
        ref = store.ref("demo", "unit", KEY)
        assert not store.has(ref)
        m = store.write(ref, {"a.json": b'{"x": 1}', "sub/b.bin": b"\x00\x01"}, meta={"params": {"n": 1}})
        assert store.has(ref)
        assert store.read(ref, "a.json") == b'{"x": 1}'
        assert store.read_json(ref, "a.json") == {"x": 1}
        assert store.read(ref, "sub/b.bin") == b"\x00\x01"
        assert m.files["sub/b.bin"].size == 2 and store.manifest(ref).meta == {"params": {"n": 1}}
        with store.open(ref, "sub/b.bin") as f:
            assert f.read() == b"\x00\x01"
        assert ref.uri.endswith(f"/demo/unit/{KEY}")

    def test_a_stage_without_manifest_is_incomplete(self, store):
        ref = store.ref("demo", "unit", KEY)
        w = store.writer(ref)
        w.write_bytes("data.bin", b"partial")
        # the process "dies" here: files exist, the manifest does not
        assert not store.has(ref)
        assert store.list("demo") == []
        with pytest.raises(ArtifactNotFound):
            store.read(ref, "data.bin")
        # a re-run writes a fresh attempt and completes
        store.write(ref, {"data.bin": b"complete"})
        assert store.read(ref, "data.bin") == b"complete"

    def test_exception_inside_writer_commits_nothing(self, store):
        ref = store.ref("demo", "unit", KEY)
        with pytest.raises(RuntimeError, match="boom"):
            with store.writer(ref) as w:
                w.write_bytes("x", b"1")
                raise RuntimeError("boom")
        assert not store.has(ref)

    def test_list_returns_complete_artifacts_only(self, store):
        a, b = store.ref("demo", "unit", KEY), store.ref("demo", "unit", KEY2)
        store.write(a, {"f": b"1"})
        store.writer(b).write_bytes("f", b"2")  # never committed
        store.write(store.ref("other", "unit", KEY), {"f": b"3"})
        assert store.list("demo") == [a]
        assert store.list(stage="unit") == sorted([a, store.ref("other", "unit", KEY)], key=lambda r: r.uri)

    def test_streamed_and_uploaded_files_are_hashed(self, store, tmp_path):
        ref = store.ref("demo", "unit", KEY)
        local = tmp_path / "ckpt.pth"
        local.write_bytes(b"w" * 100_000)
        with store.writer(ref) as w:
            with w.open("stream.bin") as f:
                for _ in range(3):
                    f.write(b"abc" * 1000)
            w.put_file("ckpt.pth", str(local))
        assert store.read(ref, "stream.bin") == b"abc" * 3000
        out = store.get_file(ref, "ckpt.pth", str(tmp_path / "dl" / "c.pth"))
        assert open(out, "rb").read() == b"w" * 100_000

    def test_concurrent_writers_of_one_key_do_not_corrupt_it(self, store):
        ref = store.ref("demo", "unit", KEY)
        barrier = threading.Barrier(4)
        errors = []

        def write(i: int) -> None:
            try:
                with store.writer(ref) as w:
                    w.write_bytes("who", str(i).encode())
                    barrier.wait(timeout=30)
                    w.write_bytes("payload", bytes([i]) * 50_000)
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        who = int(store.read(ref, "who"))
        # both files come from the same attempt, whichever won
        assert store.read(ref, "payload") == bytes([who]) * 50_000

    def test_later_writer_reuses_the_first_commit(self, store):
        ref = store.ref("demo", "unit", KEY)
        store.write(ref, {"f": b"first"})
        with store.writer(ref) as w:
            w.write_bytes("f", b"second")
        assert w.reused and store.read(ref, "f") == b"first"

    def test_tampered_file_is_detected(self, store):
        ref = store.ref("demo", "unit", KEY)
        m = store.write(ref, {"f": b"original"})
        path = f"{store.root}/demo/unit/{KEY}/{m.attempt}/f"
        store.fs.pipe_file(path, b"tampered")
        with pytest.raises(CorruptArtifact, match="does not match its manifest"):
            store.read(ref, "f")

    def test_a_flipped_byte_is_detected_on_every_read_path_and_never_used(self, store, tmp_path):
        """A committed object changed after it was written, size unchanged (bit rot, a bad copy):
        read, get_file (a checkpoint), open (ranged mask reads) and parquet_dataset (box
        shards) all raise CorruptArtifact naming the object; get_file leaves no file behind."""
        ref = store.ref("demo", "unit", KEY)
        rows = [{"image_id": "a", "image_uri": "u", "label": 1, "x1": 0, "y1": 0, "x2": 4, "y2": 4, "score": 0.9}]
        table = to_parquet_bytes(table_from_rows(rows, PSEUDO_BOXES), PSEUDO_BOXES)
        m = store.write(ref, {"ckpt.pth": bytes(range(256)) * 40, "boxes.parquet": table})
        for name in ("ckpt.pth", "boxes.parquet"):
            path = f"{store.root}/demo/unit/{KEY}/{m.attempt}/{name}"
            data = bytearray(store.fs.cat_file(path))
            data[len(data) // 2] ^= 0x01  # one bit, same size
            store.fs.pipe_file(path, bytes(data))
        named = f"demo/unit/{KEY}/ckpt.pth does not match its manifest \\(sha256 differs\\)"
        with pytest.raises(CorruptArtifact, match=named):
            store.read(ref, "ckpt.pth")
        with pytest.raises(CorruptArtifact, match=named):
            store.get_file(ref, "ckpt.pth", str(tmp_path / "local" / "ckpt.pth"))
        assert list((tmp_path / "local").iterdir()) == []  # neither the file nor a partial download
        with pytest.raises(CorruptArtifact, match=named):
            with store.open(ref, "ckpt.pth"):
                pass
        with pytest.raises(CorruptArtifact, match="boxes.parquet does not match its manifest"):
            store.parquet_dataset([ref], "boxes.parquet", PSEUDO_BOXES)

    def test_of_racing_lease_claimers_exactly_one_computes(self, store):
        """storage/leases.py over this backend's conditional create: of several processes
        (threads here) claiming one stage output, one computes it, the others reuse it."""
        from storage.leases import claim

        ref = store.ref("demo", "unit", KEY)
        computed = []

        def run(i):
            lease = claim(store, ref, owner=f"run {i}", poll_s=0.05)
            if lease is not None:
                computed.append(i)
                store.write(ref, {"f": str(i).encode()})
                lease.release()

        threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(computed) == 1 and store.read(ref, "f") == str(computed[0]).encode()

    def test_corrupt_manifest_is_an_error_not_a_silent_miss(self, store):
        ref = store.ref("demo", "unit", KEY)
        store.write(ref, {"f": b"x"})
        store.fs.pipe_file(f"{store.root}/demo/unit/{KEY}/{MANIFEST}", b"{not json")
        with pytest.raises(CorruptArtifact, match="not a valid manifest"):
            store.has(ref)

    def test_parquet_tables_and_single_mask_reads(self, store):
        ref = store.ref("demo", "unit", KEY)
        boxes = table_from_rows(
            [{"image_id": "a", "image_uri": "u", "label": 1, "x1": 0, "y1": 0, "x2": 4, "y2": 4, "score": 0.9}],
            PSEUDO_BOXES,
        )
        masks = [(f"m{i}", np.full((8, 9), i, np.uint8)) for i in range(5)]
        masks[3][1][2:4, 2:4] = 255
        shard, index = encode_mask_shard(masks, "masks-00000.parquet")
        with store.writer(ref) as w:
            w.write_bytes("boxes.parquet", to_parquet_bytes(boxes, PSEUDO_BOXES))
            w.write_bytes("masks-00000.parquet", shard)
        assert read_parquet(store.read(ref, "boxes.parquet"), PSEUDO_BOXES).to_pylist() == boxes.to_pylist()
        row = index.to_pylist()[3]
        with store.open(ref, row["shard"]) as f:
            assert np.array_equal(read_mask(f, row["row_group"]), masks[3][1])

    def test_parquet_files_of_many_artifacts_scan_as_one_dataset(self, store):
        """store.parquet_dataset: one table over the same file of several artifacts, streamed."""
        refs = [store.ref("demo", "unit", k) for k in (KEY, KEY2)]
        for n, ref in enumerate(refs, start=1):
            rows = [
                {
                    "image_id": f"i{n}-{j}",
                    "image_uri": "u",
                    "label": n,
                    "x1": 0,
                    "y1": 0,
                    "x2": 1,
                    "y2": 1,
                    "score": 0.5,
                }
                for j in range(n * 3)
            ]
            with store.writer(ref) as w:
                w.write_bytes("boxes.parquet", to_parquet_bytes(table_from_rows(rows, PSEUDO_BOXES), PSEUDO_BOXES))
        table = store.parquet_dataset(refs, "boxes.parquet", PSEUDO_BOXES)
        assert table.count_rows() == 3 + 6
        labels = [v for b in table.to_batches(columns=["label"]) for v in b.column("label").to_pylist()]
        assert sorted(labels) == [1] * 3 + [2] * 6
        with pytest.raises(KeyError, match="has no file 'stats.parquet'"):
            store.parquet_dataset(refs, "stats.parquet", PSEUDO_BOXES)

    def test_bad_names_are_refused(self, store):
        with pytest.raises(ValueError, match="invalid dataset name"):
            store.ref("../etc", "unit", KEY)
        with pytest.raises(ValueError, match="invalid artifact key"):
            store.ref("demo", "unit", "not-a-key")
        with pytest.raises(ValueError, match="invalid artifact file name"):
            store.writer(store.ref("demo", "unit", KEY)).write_bytes("../x", b"")
        with pytest.raises(ArtifactNotFound, match="has no file 'nope'"):
            ref = store.ref("demo", "unit", KEY)
            store.write(ref, {"f": b""})
            store.read(ref, "nope")
