"""A pool of unlabeled images is listed, keyed and sharded as a stream: sorted runs merged from
disk, a digest fed row by row, shards written as the listing is read - with the same results
(and the same keys) as holding the whole listing in memory."""

from __future__ import annotations

import os
import random

import pytest

from storage.keys import JsonListDigest, digest_json
from storage.listing import ListedFile, iter_files, list_files, sorted_files


def test_the_streamed_digest_of_a_list_is_digest_json_of_the_list():
    rows = [{"image_id": f"é/{i}.png", "image_uri": f"s3://b/é/{i}.png", "size": i * 7} for i in range(5)]
    for n in range(len(rows) + 1):  # the empty list included
        digest = JsonListDigest()
        for row in rows[:n]:
            digest.add(row)
        assert digest.hexdigest() == digest_json(rows[:n]) and digest.count == n
    assert digest.hexdigest() == digest.hexdigest()  # reading it does not change it


def test_sorted_files_merges_spilled_runs_into_one_sorted_stream(tmp_path, monkeypatch):
    names = [f"{d}/{i}.png" for d in ("b", "a", "a/z", "c") for i in range(7)] + ["a.png", "a0.png"]
    files = [ListedFile(rel=n, uri=f"/root/{n}", size=len(n)) for n in names]
    random.Random(0).shuffle(files)
    expected = sorted(files, key=lambda f: f.rel)
    monkeypatch.setenv("SELFTRAIN_WORK_DIR", str(tmp_path / "scratch"))  # where runs are spilled
    for run_size in (1, 3, 29, 30, 1000):  # one file a run (2 merge passes) .. everything in one run
        assert list(sorted_files(files, run_size=run_size)) == expected, run_size
    assert os.listdir(tmp_path / "scratch") == []  # the spilled runs are removed
    stream = sorted_files(files, run_size=4)
    next(stream)
    assert len(os.listdir(tmp_path / "scratch")) == 1  # the runs' folder, while the merge runs
    stream.close()  # abandoned half-way: removed too
    assert os.listdir(tmp_path / "scratch") == []
    with pytest.raises(ValueError, match="run_size must be positive"):
        list(sorted_files(files, run_size=0))


def test_a_folder_is_walked_one_entry_at_a_time_and_listed_sorted(tmp_path):
    for rel in ("b/1.png", "a/2.JPG", "a/sub/3.png", "a.png", "notes.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x" * len(rel))
    os.symlink(tmp_path / "a", tmp_path / "b" / "back")  # a linked folder, listed once more under b/
    os.symlink(tmp_path, tmp_path / "a" / "sub" / "loop")  # a cycle: each real folder once
    listed = list_files(str(tmp_path), (".png", ".jpg"))
    # folders in os.walk's order with sorted sub-folders: a/ is seen before its link b/back
    assert [(f.rel, f.size) for f in listed] == [("a.png", 5), ("a/2.JPG", 7), ("a/sub/3.png", 11), ("b/1.png", 7)]
    assert [f.uri for f in listed] == [str(tmp_path / f.rel) for f in listed]
    assert sorted(f.rel for f in iter_files(str(tmp_path), (".png",))) == ["a.png", "a/sub/3.png", "b/1.png"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        iter_files(str(tmp_path / "nope"))  # at the call, before any iteration


def test_a_sub_folder_that_vanishes_or_loops_is_skipped_as_os_walk_skips_it(tmp_path):
    (tmp_path / "sub").mkdir()
    for rel in ("a.png", "sub/x.png"):
        (tmp_path / rel).write_bytes(b"x")
    os.symlink(tmp_path / "l2", tmp_path / "l1")  # a link loop: neither a folder nor a file
    os.symlink(tmp_path / "l1", tmp_path / "l2")
    files = iter_files(str(tmp_path), (".png",))
    first = next(files)  # the root's own files come before its sub-folders are visited
    assert first.rel == "a.png"
    import shutil

    shutil.rmtree(tmp_path / "sub")  # gone before the walk reaches it
    assert list(files) == []


def test_what_a_listing_cannot_read_is_named_to_the_caller(tmp_path):
    """A sub-folder of mode 000 and a file in a folder listed but not entered (mode 0444) are
    skipped and named in ``unreadable`` with the reason, as is a link to nothing (the root's
    entries come first: folders are walked after the files beside them)."""
    import os

    from tests.processes import run_unprivileged

    for rel in ("a.png", "closed/x.png", "listed/y.png"):
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    os.symlink(tmp_path / "gone.png", tmp_path / "dangling.png")
    os.chmod(tmp_path / "closed", 0)
    os.chmod(tmp_path / "listed", 0o444)
    try:
        done = run_unprivileged(
            f"from storage.listing import list_files\nbad = []\n"
            f"print([f.rel for f in list_files({str(tmp_path)!r}, unreadable=bad)], bad)"
        )
    finally:
        os.chmod(tmp_path / "closed", 0o755)
        os.chmod(tmp_path / "listed", 0o755)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(
        [
            "a.png",
        ]
    ) + " " + str(
        [
            f"{tmp_path}/dangling.png (a link to {tmp_path}/gone.png, which does not exist)",
            f"{tmp_path}/closed (Permission denied)",
            f"{tmp_path}/listed/y.png (Permission denied)",
        ]
    )
    os.chmod(tmp_path / "closed", 0)  # an unlabeled pool: listed without it, counted for its warning
    try:
        done = run_unprivileged(
            f"from tasks.list_unlabeled import iter_images\nleft = {{}}\n"
            f"print([r['image_id'] for r in iter_images({str(tmp_path)!r}, left)], left['cannot be read'])"
        )
    finally:
        os.chmod(tmp_path / "closed", 0o755)
    link = f"{tmp_path}/dangling.png (a link to {tmp_path}/gone.png, which does not exist)"
    assert done.stdout.strip() == f"['a.png', 'listed/y.png'] [2, '{link}', '{tmp_path}/closed (Permission denied)']"


def test_a_name_holding_two_colons_is_a_name_not_a_chained_url(tmp_path):
    """fsspec reads 'a::b' as a chain of file systems; a file named so (a::b.png, on disk or in
    a bucket) is read as itself, and real chains ('simplecache::file://...', a zip member)
    still work."""
    from storage.listing import read_url

    (tmp_path / "a::b.png").write_bytes(b"colons")
    assert [f.rel for f in list_files(str(tmp_path))] == ["a::b.png"]
    assert read_url(str(tmp_path / "a::b.png")) == b"colons"
    assert read_url(f"file://{tmp_path}/a::b.png") == b"colons"
    (tmp_path / "plain.txt").write_bytes(b"plain")
    assert read_url(f"simplecache::file://{tmp_path}/plain.txt") == b"plain"
    import zipfile

    with zipfile.ZipFile(tmp_path / "a.zip", "w") as z:
        z.writestr("i.png", b"zipped")
    assert read_url(f"zip://i.png::file://{tmp_path}/a.zip") == b"zipped"
    assert read_url(f"zip://i.png::{tmp_path}/a.zip") == b"zipped"
    with pytest.raises(NotADirectoryError, match="inside an archive.*unpack it"):
        list_files(f"zip://::file://{tmp_path}/a.zip")  # its files' URIs would lose the archive
    from tasks.list_unlabeled import list_images

    with pytest.raises(NotADirectoryError, match="inside an archive"):  # the pool: not 'is a file'
        list_images(f"zip://::file://{tmp_path}/a.zip")
    from storage.listing import url_fs

    fs, path = url_fs("s3://bucket/a::b.png")  # a key holding '::' (no request made)
    assert type(fs).__name__ == "S3FileSystem" and path == "bucket/a::b.png"


def test_a_streamed_listing_keeps_the_key_and_rows_of_the_whole_listing_and_shards_alike(tmp_path, monkeypatch):
    """The listing's key is the digest of all its rows (as before streaming: stores made then
    reuse their listings); shards read from the stored listing chunk by chunk are the chunks of
    make_shards over the whole list; the spilled runs make no difference."""
    import storage.listing
    import tasks.list_unlabeled
    from selftrain.stage import UNLABELED_STAGE, UNLABELED_VERSION, get_store
    from storage.schemas import UNLABELED_IMAGES, read_parquet
    from tasks.list_unlabeled import list_images, list_unlabeled
    from tasks.shard_images import make_shards, shard_images

    pool = tmp_path / "pool"
    for i in random.Random(1).sample(range(50), 23):
        (pool / f"d{i % 4}").mkdir(parents=True, exist_ok=True)
        (pool / f"d{i % 4}" / f"{i}.png").write_bytes(b"p" * i)
    rows = list_images(str(pool))
    assert [r["image_id"] for r in rows] == sorted(r["image_id"] for r in rows) and len(rows) == 23
    store_url = str(tmp_path / "store")
    store = get_store(store_url)
    expected = store.stage_ref("pool", UNLABELED_STAGE, UNLABELED_VERSION, "", {"listing": digest_json(rows)}, {})

    monkeypatch.setenv("SELFTRAIN_WORK_DIR", str(tmp_path / "scratch"))
    monkeypatch.setattr(storage.listing, "RUN_SIZE", 5)  # five sorted runs spilled and merged
    monkeypatch.setattr(tasks.list_unlabeled, "ROW_GROUP", 4)  # the listing written 4 rows at a time
    listing = list_unlabeled.fn(store_url, "pool", str(pool))
    assert listing == expected
    assert read_parquet(store.read(listing, "images.parquet"), UNLABELED_IMAGES).to_pylist() == rows
    assert store.manifest(listing).meta["num_images"] == 23

    plan = shard_images.fn(store_url, listing, 6)
    shards = [read_parquet(store.read(s, "images.parquet"), UNLABELED_IMAGES).to_pylist() for s in plan.shards]
    assert shards == make_shards(rows, 6) and [len(s) for s in shards] == [6, 6, 6, 5]
    assert (plan.images, plan.new_images, plan.reused_shards) == (23, 23, 0)


def test_hidden_files_and_names_that_are_not_utf8_are_left_out_with_a_warning(tmp_path, caplog):
    """macOS's ._x.jpg metadata, files in hidden folders and a Latin-1 name are not images of the
    pool: listed without them, and a warning names them; the listing's key can be computed."""
    import logging

    from tasks.list_unlabeled import list_images

    (tmp_path / ".thumbs").mkdir()
    for rel in ("a.png", "._a.png", ".thumbs/t.png", "sub/b.jpg"):
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    with open(os.path.join(os.fsencode(tmp_path), b"caf\xe9.png"), "wb") as f:  # not UTF-8
        f.write(b"x")
    logger = logging.getLogger("selftrain")
    records: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        rows = list_images(str(tmp_path))
    finally:
        logger.removeHandler(handler)
    assert [r["image_id"] for r in rows] == ["a.png", "sub/b.jpg"]
    digest_json(rows)  # every kept name can be part of a key
    assert any("2 file(s)" in m and "(hidden name)" in m and "._a.png" in m and ".thumbs/t.png" in m for m in records)
    assert any("1 file(s)" in m and "(not UTF-8 name)" in m and "caf\\udce9.png" in m for m in records), records


def test_a_prefix_that_is_a_file_or_empty_is_refused_clearly(tmp_path):
    from flows.params import _absolute
    from tasks.list_unlabeled import list_images

    (tmp_path / "one.png").write_bytes(b"x")
    with pytest.raises(NotADirectoryError, match=r"one.png is a file, not a folder: give the folder"):
        list_images(str(tmp_path / "one.png"))
    for empty in ("", "  "):
        with pytest.raises(ValueError, match="unlabeled is empty"):
            _absolute(empty, "unlabeled")
    with pytest.raises(ValueError, match="names no bucket or host"):
        _absolute("s3://", "unlabeled")
    assert _absolute("~/pool", "unlabeled") == os.path.join(os.path.expanduser("~"), "pool")


def test_join_sorted_pairs_every_key_of_either_stream_in_order():
    from storage.listing import join_sorted

    left = [{"id": "b"}, {"id": "d"}, {"id": "e"}]
    right = [("a", 1), ("b", 2), ("b", 3), ("c", 4), ("e", 5), ("f", 6)]
    out = [(row and row["id"], group) for row, group in join_sorted(left, right, lambda r: r["id"], lambda t: t[0])]
    assert out == [
        (None, [("a", 1)]),
        ("b", [("b", 2), ("b", 3)]),
        (None, [("c", 4)]),
        ("d", []),
        ("e", [("e", 5)]),
        (None, [("f", 6)]),
    ]
    assert list(join_sorted([], [("a", 1)], str, lambda t: t[0])) == [(None, [("a", 1)])]
    with pytest.raises(ValueError, match="left stream is not sorted by its key at 'a'"):
        list(join_sorted(["b", "a"], [], str, lambda t: t[0]))
    with pytest.raises(ValueError, match="right stream is not sorted by its key at 'a'"):
        list(join_sorted(["c"], [("b", 1), ("a", 2)], str, lambda t: t[0]))
