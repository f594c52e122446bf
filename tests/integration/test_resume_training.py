"""A real training stopped with its last checkpoints cut short resumes from the newest complete
one and stores only complete checkpoints (tasks/train_model.py, selftrain/stage.py)."""

from __future__ import annotations

import glob
import os
import shutil

from tests.integration.test_ddp_cpu import _tiny_set
from tests.stage_log import stage_lines


def test_checkpoints_cut_short_by_a_lost_machine_are_retrained_from_the_newest_complete_one(tmp_path, monkeypatch):
    """A teacher trains 6 iterations with K = 3 (iter_2, iter_4, iter_6). Then the machine is
    lost as if before its page cache reached the disk: iter_4.pth and iter_6.pth are cut short
    while last_checkpoint still names iter_6, and the stored output is gone. The re-run deletes
    iter_4, says so, resumes from iter_2 (the only complete one before it), trains iterations
    3-6 again (writing iter_4 and iter_6 anew) and
    stores three complete checkpoints, the first being the iter_2 it resumed from, and the
    history of the whole training: iterations 1-2 logged by the first attempt, 3-6 by the second."""
    from selftrain.stage import checkpoint_complete, get_store, scratch_dir
    from tasks.train_model import train_model

    store_url, labeled = _tiny_set(tmp_path, "detection")
    monkeypatch.setenv("SELFTRAIN_WORK_DIR", str(tmp_path / "scratch"))
    args = (store_url, "det/retinanet_mnv2_256_cpu", labeled, None)
    ref = train_model.fn(*args, role="teacher", iters=6, k=3, seed=0, pretrained=False)
    store, work = get_store(store_url), scratch_dir(ref)
    first = store.read(ref, "ckpt-1.pth")
    assert open(os.path.join(work, "last_checkpoint")).read().endswith("iter_6.pth")
    for name in ("iter_4.pth", "iter_6.pth"):
        path = os.path.join(work, name)
        data = open(path, "rb").read()
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])
    shutil.rmtree(os.path.join(store_url, ref.dataset, ref.stage, ref.key))

    with stage_lines() as lines:
        again = train_model.fn(*args, role="teacher", iters=6, k=3, seed=0, pretrained=False)
    assert again == ref
    said = "\n".join(lines)
    assert (
        f"train teacher: {work}/iter_4.pth is incomplete (cut short or changed after it was written); deleted" in said
    )
    assert (
        f"last_checkpoint names '{work}/iter_6.pth', but {work}/iter_4.pth is missing or incomplete: resuming from "
        f"{work}/iter_2.pth, the newest complete checkpoint before it" in said
    )
    assert f"resumed from the last checkpoint of a stopped attempt (iter: 2, {work}/iter_2.pth)" in said
    assert "[####################] 6/6" in said  # trained on to the end of the schedule
    assert "(6 iterations, resumed at iteration 2: 4 trained in this attempt)" in said
    names = [f"ckpt-{j}.pth" for j in (1, 2, 3)]
    assert sorted(store.manifest(again).files) == sorted([*names, "config.py", "history.json"])
    for name in names:
        local = str(tmp_path / name)
        store.get_file(again, name, local)
        assert checkpoint_complete(local), name
    assert store.read(again, "ckpt-1.pth") == first  # the iter_2 it resumed from, unchanged
    history = store.read_json(again, "history.json")  # both attempts: 1-2 from the first, 3-6 resumed
    assert [row["iter"] for row in history if "iter" in row] == [1, 2, 3, 4, 5, 6]


def test_a_training_stopped_in_its_last_validation_is_validated_when_resumed_at_the_end(tmp_path, monkeypatch):
    """A teacher with a held-out set trains 4 iterations (K = 2: validation at 2 and 4) and is
    stopped during its last validation: every checkpoint is written, the last validation's row
    is not. Its re-run resumes at iteration 4, where mmengine trains and validates nothing; the
    stage validates once more, so that the stored history ends with the last validation."""
    from selftrain.stage import get_store, scratch_dir
    from tasks.train_model import _scalars, train_model, validated_at_end

    store_url, labeled = _tiny_set(tmp_path, "detection")
    monkeypatch.setenv("SELFTRAIN_WORK_DIR", str(tmp_path / "scratch"))
    args = (store_url, "det/retinanet_mnv2_256_cpu", labeled, labeled)  # the labeled set held out as well
    ref = train_model.fn(*args, role="teacher", iters=4, k=2, seed=0, pretrained=False)
    store, work = get_store(store_url), scratch_dir(ref)
    history = store.read_json(ref, "history.json")
    assert validated_at_end(history) and sum("iter" not in row for row in history) == 2
    (scalars,) = glob.glob(os.path.join(work, "*", "vis_data", "scalars.json"))
    lines = open(scalars).read().splitlines(keepends=True)
    with open(scalars, "w") as f:  # the last validation's row never written
        f.writelines(lines[:-1])
    assert not validated_at_end(_scalars(work))
    shutil.rmtree(os.path.join(store_url, ref.dataset, ref.stage, ref.key))

    with stage_lines() as said:
        again = train_model.fn(*args, role="teacher", iters=4, k=2, seed=0, pretrained=False)
    assert again == ref
    text = "\n".join(said)
    assert f"resumed from the last checkpoint of a stopped attempt (iter: 4, {work}/iter_4.pth)" in text
    assert "the validation at the end of the schedule did not finish before the stop: validating now" in text
    stored = store.read_json(again, "history.json")
    assert validated_at_end(stored) and sum("iter" not in row for row in stored) == 2
    assert [row["iter"] for row in stored if "iter" in row] == [row["iter"] for row in history if "iter" in row]
