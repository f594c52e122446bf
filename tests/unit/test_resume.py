"""A stopped training resumes only from a complete checkpoint (selftrain/stage.py).

mmengine writes a checkpoint in place and then names it in ``last_checkpoint``; a process
killed, or a machine lost before its page cache reached the disk, can leave a checkpoint cut
short that the pointer still names. These tests build such folders with real ``torch.save``
files and check which checkpoint a re-run resumes from, what is deleted and what it says.
"""

from __future__ import annotations

import json
import logging
import os

import pytest
import torch

from selftrain.stage import (
    ScratchError,
    best_checkpoint,
    check_checkpoints,
    checkpoint_complete,
    resume_point,
)
from tests.stage_log import stage_lines


def _save(path, value: float = 1.0) -> str:
    torch.save({"state_dict": {"w": torch.full((64, 64), value)}, "meta": {"iter": 1}}, path)
    return str(path)


def _cut(path: str, keep: float = 0.5) -> None:
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: int(len(data) * keep)])


@pytest.fixture
def warnings():
    with stage_lines(logging.WARNING) as lines:
        yield lines


def _central_entry_changed(data: bytes, offset: int, value: int) -> bytes:
    """``data`` (a zip archive) with the 2-byte field at ``offset`` of its first central
    directory entry set to ``value``: 8 general purpose flags, 10 compression method."""
    at = data.index(b"PK\x01\x02") + offset
    return data[:at] + value.to_bytes(2, "little") + data[at + 2 :]


def test_a_complete_checkpoint_is_told_from_one_cut_short_changed_or_missing(tmp_path):
    path = _save(tmp_path / "iter_2.pth")
    assert checkpoint_complete(path)
    data = open(path, "rb").read()
    for name, content in {
        "last_byte_lost": data[:-1],
        "half": data[: len(data) // 2],
        "empty": b"",
        "one_bit_flipped": data[:4000] + bytes([data[4000] ^ 1]) + data[4001:],  # a tensor byte: CRC-32
        "unknown_compression": _central_entry_changed(data, 10, 99),  # zipfile raises NotImplementedError
        "deflated_but_stored": _central_entry_changed(data, 10, 8),  # zlib.error
        "marked_encrypted": _central_entry_changed(data, 8, 1),  # RuntimeError
    }.items():
        (tmp_path / name).write_bytes(content)
        assert not checkpoint_complete(str(tmp_path / name)), name
    assert not checkpoint_complete(str(tmp_path / "missing.pth"))


def _schedule(folder, iterations=(20, 40, 60)) -> list[str]:
    """The checkpoints a 60-iteration schedule with K = 3 writes, as train_model lists them."""
    return [str(folder / f"iter_{i}.pth") for i in iterations]


def test_no_pointer_means_no_resume(tmp_path):
    _save(tmp_path / "iter_20.pth")  # a checkpoint without last_checkpoint: mmengine never named it
    assert resume_point(str(tmp_path), "train teacher", _schedule(tmp_path)) is None
    assert (tmp_path / "iter_20.pth").exists()


def test_a_complete_named_checkpoint_is_resumed_from_by_its_name_in_this_folder(tmp_path, warnings):
    _save(tmp_path / "iter_20.pth")
    _save(tmp_path / "iter_40.pth")
    (tmp_path / "last_checkpoint").write_text("/elsewhere/before/a/move/iter_40.pth")
    assert resume_point(str(tmp_path), "train teacher", _schedule(tmp_path)) == str(tmp_path / "iter_40.pth")
    assert (tmp_path / "last_checkpoint").read_text() == str(tmp_path / "iter_40.pth")
    assert not warnings


def test_a_named_checkpoint_cut_short_is_deleted_and_the_newest_complete_one_before_it_resumed(tmp_path, warnings):
    _save(tmp_path / "iter_20.pth")
    _cut(_save(tmp_path / "iter_40.pth"))
    _cut(_save(tmp_path / "iter_60.pth"))  # the pointer names 40: 60 was being written when it stopped
    (tmp_path / "last_checkpoint").write_text(str(tmp_path / "iter_40.pth"))
    assert resume_point(str(tmp_path), "train teacher", _schedule(tmp_path)) == str(tmp_path / "iter_20.pth")
    assert sorted(os.listdir(tmp_path)) == ["iter_20.pth", "iter_60.pth", "last_checkpoint"]  # 60: rewritten later
    assert (tmp_path / "last_checkpoint").read_text() == str(tmp_path / "iter_20.pth")
    assert warnings == [
        f"train teacher: {tmp_path / 'iter_40.pth'} is incomplete (cut short or changed after it was written); deleted",
        f"train teacher: last_checkpoint names {str(tmp_path / 'iter_40.pth')!r}, but {tmp_path / 'iter_40.pth'} is "
        f"missing or incomplete: resuming from {tmp_path / 'iter_20.pth'}, the newest complete checkpoint before it",
    ]


def test_a_named_checkpoint_that_is_gone_gives_way_to_the_one_before(tmp_path, warnings):
    for i in (20, 40):
        _save(tmp_path / f"iter_{i}.pth")
    (tmp_path / "last_checkpoint").write_text("/w/iter_60.pth")
    assert resume_point(str(tmp_path), "train teacher", _schedule(tmp_path)) == str(tmp_path / "iter_40.pth")
    assert warnings == [
        f"train teacher: last_checkpoint names '/w/iter_60.pth', but {tmp_path / 'iter_60.pth'} is missing or "
        f"incomplete: resuming from {tmp_path / 'iter_40.pth'}, the newest complete checkpoint before it"
    ]


def test_an_earlier_checkpoint_lost_means_training_again_before_it_not_failing_after_the_training(tmp_path, warnings):
    """Every scheduled checkpoint is stored after the training, and a resumed training does not
    write the ones before its resume point again: a gap there is found before training."""
    _save(tmp_path / "iter_20.pth")
    (tmp_path / "iter_40.pth").write_text("not a checkpoint")  # replaced by mistake
    _save(tmp_path / "iter_60.pth")
    (tmp_path / "last_checkpoint").write_text(str(tmp_path / "iter_60.pth"))
    assert resume_point(str(tmp_path), "train teacher", _schedule(tmp_path)) == str(tmp_path / "iter_20.pth")
    assert not (tmp_path / "iter_40.pth").exists()
    assert warnings[-1].endswith(
        f"but {tmp_path / 'iter_40.pth'} is missing or incomplete: resuming from {tmp_path / 'iter_20.pth'}, the "
        "newest complete checkpoint before it"
    )
    os.remove(tmp_path / "iter_20.pth")  # gone: nothing before the gap
    assert resume_point(str(tmp_path), "train teacher", _schedule(tmp_path)) is None
    assert not (tmp_path / "last_checkpoint").exists()
    assert warnings[-1] == (
        f"train teacher: last_checkpoint names {str(tmp_path / 'iter_20.pth')!r}, but {tmp_path / 'iter_20.pth'} is "
        "missing or incomplete and no complete checkpoint comes before it: training from scratch"
    )


def test_with_no_complete_checkpoint_left_the_training_starts_from_scratch(tmp_path, warnings):
    _cut(_save(tmp_path / "iter_20.pth"), keep=0.9)
    (tmp_path / "last_checkpoint").write_text(str(tmp_path / "iter_20.pth"))
    assert resume_point(str(tmp_path), "train teacher", _schedule(tmp_path)) is None
    assert os.listdir(tmp_path) == []  # the pointer too: mmengine must not resume from it
    assert warnings[-1] == (
        f"train teacher: last_checkpoint names {str(tmp_path / 'iter_20.pth')!r}, but {tmp_path / 'iter_20.pth'} is "
        "missing or incomplete and no complete checkpoint comes before it: training from scratch"
    )


@pytest.mark.parametrize(
    "content, reads",
    [
        (b"", "''"),  # killed while mmengine wrote it
        (b"\x00\x00\x00\x00", "4 bytes b'\\x00\\x00\\x00\\x00'"),  # a lost machine's zeroed block
        (b"\xff\xfe\x80\x00", "4 bytes b'\\xff\\xfe\\x80\\x00'"),  # not UTF-8
        (b"/work/x/best_coco_bbox_mAP.pth", "'/work/x/best_coco_bbox_mAP.pth'"),  # no iteration checkpoint
    ],
)
def test_a_pointer_that_names_no_checkpoint_resumes_from_the_complete_one_written_last(
    tmp_path, warnings, content, reads
):
    """Here the training went to 60, then started again from 20 (its 20 written after 40 and 60):
    the one written last is where it stood, not the highest iteration."""
    for written, i in enumerate((40, 60, 20)):
        _save(tmp_path / f"iter_{i}.pth")
        os.utime(tmp_path / f"iter_{i}.pth", (1e9 + written, 1e9 + written))
    (tmp_path / "last_checkpoint").write_bytes(content)
    assert resume_point(str(tmp_path), "train teacher", _schedule(tmp_path)) == str(tmp_path / "iter_20.pth")
    assert (tmp_path / "last_checkpoint").read_text() == str(tmp_path / "iter_20.pth")
    assert warnings == [
        f"train teacher: last_checkpoint names {reads}, no checkpoint: resuming from {tmp_path / 'iter_20.pth'}, "
        "the complete checkpoint written last"
    ]


def test_a_folder_where_the_pointer_or_a_checkpoint_should_be_is_reported_and_removed(tmp_path, warnings):
    _save(tmp_path / "iter_20.pth")
    (tmp_path / "iter_40.pth").mkdir()
    (tmp_path / "last_checkpoint").mkdir()
    assert resume_point(str(tmp_path), "train teacher", _schedule(tmp_path)) == str(tmp_path / "iter_20.pth")
    assert (tmp_path / "last_checkpoint").read_text() == str(tmp_path / "iter_20.pth")
    assert not (tmp_path / "iter_40.pth").exists()
    assert warnings[0] == (
        f"train teacher: {tmp_path / 'iter_40.pth'} is incomplete (cut short or changed after it was written); deleted"
    )
    assert "names nothing readable (IsADirectoryError), no checkpoint: resuming from" in warnings[1]


def test_the_best_checkpoint_is_the_newest_by_iteration_and_a_cut_short_one_is_stood_in_for(tmp_path, warnings):
    assert best_checkpoint(str(tmp_path), "train teacher") is None  # no held-out set: no best
    _save(tmp_path / "best_coco_bbox_mAP_iter_40.pth")
    _save(tmp_path / "best_coco_bbox_mAP_iter_100.pth")  # by name, 40 sorts after 100
    assert best_checkpoint(str(tmp_path), "train teacher") == str(tmp_path / "best_coco_bbox_mAP_iter_100.pth")
    _cut(str(tmp_path / "best_coco_bbox_mAP_iter_100.pth"))
    _save(tmp_path / "iter_100.pth")  # saved at the same iteration, before the validation: the same weights
    assert best_checkpoint(str(tmp_path), "train teacher") == str(tmp_path / "iter_100.pth")
    assert not (tmp_path / "best_coco_bbox_mAP_iter_100.pth").exists()
    _cut(_save(tmp_path / "best_coco_bbox_mAP_iter_120.pth"))
    assert best_checkpoint(str(tmp_path), "train teacher") is None  # no iter_120.pth to stand in


def test_an_incomplete_checkpoint_after_the_training_fails_it_and_the_rerun_resumes_before_it(tmp_path):
    ckpts = [_save(tmp_path / f"iter_{i}.pth") for i in (20, 40, 60)]
    (tmp_path / "last_checkpoint").write_text(ckpts[-1])
    check_checkpoints(str(tmp_path), ckpts, "train teacher")  # all complete: nothing happens
    _cut(ckpts[1])
    with pytest.raises(ScratchError) as raised:
        check_checkpoints(str(tmp_path), ckpts, "train teacher")
    assert str(raised.value) == (
        f"train teacher: scratch folder {tmp_path}: checkpoints ['iter_40.pth'] are incomplete (cut short or "
        "changed after they were written) after the training. Nothing of this stage was stored; a re-run trains "
        "again from iter_20.pth."
    )
    assert not os.path.exists(ckpts[1])
    assert (tmp_path / "last_checkpoint").read_text() == ckpts[0]
    assert resume_point(str(tmp_path), "train teacher", ckpts) == ckpts[0]


def test_the_stored_history_joins_the_attempts_of_a_resumed_training(tmp_path):
    """Rows as mmengine logs them (a training row has its iter, a validation row has none): a
    first attempt killed after iteration 50 (logged every 10), a second resumed from iter_40,
    then a third resumed at the end of the schedule (nothing left to train), and a fourth that
    trained from scratch would replace them all."""
    from tasks.train_model import _scalars, merge_attempts

    def train(i):
        return {"iter": i, "step": i, "loss": 1 / i}

    val20, val40, val60 = ({"coco/bbox_mAP": m, "step": 0} for m in (0.001, 0.002, 0.005))
    first = [train(1), train(10), train(20), val20, train(30), train(40), val40, train(50)]
    second = [train(50), train(60), val60]
    assert merge_attempts([first, second]) == [*first[:7], *second]
    assert merge_attempts([first, second, []]) == [*first[:7], *second]
    assert merge_attempts([first, second, [train(1), train(10)]]) == [train(1), train(10)]
    assert merge_attempts([]) == []
    assert merge_attempts([first + second]) == [*first[:7], *second]  # a retry in the same process: one file

    for name, rows in (("20261130_125331", first), ("20261130_125404", second)):
        folder = tmp_path / name / "vis_data"
        folder.mkdir(parents=True)
        text = "".join(json.dumps(r) + "\n" for r in rows)
        (folder / "scalars.json").write_text(text + ('{"iter": 55, "lo' if name.endswith("331") else ""))
    os.utime(tmp_path / "20261130_125331" / "vis_data" / "scalars.json", (1e9, 1e9))
    assert _scalars(str(tmp_path)) == [*first[:7], *second]  # the first file's last line was cut short
    os.rename(tmp_path / "20261130_125404", tmp_path / "20261130_015404")  # the clock went back an hour or more
    assert _scalars(str(tmp_path)) == [*first[:7], *second]  # ordered by when each was written
