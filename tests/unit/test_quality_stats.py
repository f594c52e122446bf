"""The quality benchmark's paired statistics, against values computed by hand."""

import math

import pytest

from benchmarks.quality import paired, table


def test_paired_differences_and_one_sided_p_values():
    student = [0.50, 0.52, 0.54, 0.56, 0.58]
    control = [0.49, 0.50, 0.51, 0.52, 0.53]  # differences 0.01 .. 0.05
    s = paired(student, control)
    assert s["mean"] == pytest.approx(0.03)
    assert s["sd"] == pytest.approx(math.sqrt(0.00025))  # sample SD of 0.01..0.05
    assert s["wins"] == 5 and s["n"] == 5
    # t = 0.03 / (0.015811 / sqrt 5) = 4.2426 with 4 degrees of freedom: one-sided p = 0.00659
    assert s["t_p"] == pytest.approx(0.00659, abs=5e-5)
    # all five signed ranks positive: exact one-sided Wilcoxon p = 1 / 2**5
    assert s["wilcoxon_p"] == pytest.approx(1 / 32)


def test_paired_worse_student_gets_a_large_p_and_no_wins():
    s = paired([0.4, 0.41, 0.39], [0.5, 0.5, 0.5])
    assert s["wins"] == 0 and s["mean"] == pytest.approx(-0.1)
    assert s["t_p"] > 0.99 and s["wilcoxon_p"] == pytest.approx(1.0)


def test_paired_without_spread_has_no_p_value():
    s = paired([0.2, 0.2], [0.2, 0.2])
    assert s["mean"] == 0 and s["wins"] == 0
    assert math.isnan(s["t_p"]) and math.isnan(s["wilcoxon_p"])


def test_table_lists_every_seed_and_comparison():
    rows = [
        {
            "seed": seed,
            "metric": "mIoU",
            "teacher": 0.5,
            "students": {"st": 0.5 + d, "st++": 0.5 + 2 * d},
            "controls": {"st": 0.5, "st++": 0.5},
            "iters": {"teacher": 324, "st": 1944, "st++": 1944},
        }
        for seed, d in ((0, 0.01), (1, 0.02))
    ]
    text = table(rows, "segmentation", ["st", "st++"])
    assert "| 0 | 0.5000 | 0.5100 | 0.5000 | 0.5200 | 0.5000 |" in text
    assert "| st++ - st | +0.0150 | 0.0071 | 2/2 |" in text
    assert "teacher 324 it" in text and "st student and its control 1944 it" in text


def test_table_reports_the_alpha_experiment_and_a_failed_training():
    rows = [
        {
            "seed": seed,
            "metric": "bbox_mAP",
            "teacher": 0.07,
            "students": {"zoph": 0.08},
            "controls": {"zoph": 0.075},
            "iters": {"teacher": 900, "zoph": 900},
            "alpha4": {"normalised": {"value": 0.08, "error": None}, "plain": plain},
        }
        for seed, plain in ((0, {"value": 0.06, "error": None}), (1, {"value": None, "error": "RuntimeError: nan"}))
    ]
    text = table(rows, "detection", ["zoph"])
    assert "| 0 | 0.0800 | 0.0600 |" in text
    assert "| 1 | 0.0800 | failed: RuntimeError: nan |" in text
    assert "normalised - plain: +0.0200" in text and "1/1 seeds" in text  # only seeds where both trained


def test_each_seed_runs_the_demo_with_every_option_it_has():
    """The benchmark starts from the demo's own defaults: an option added to the demo (as the
    threshold rule was) cannot be missing from the arguments the benchmark builds."""
    from app import demo
    from benchmarks.quality import demo_arguments

    ns = demo_arguments(60, None, 3, ["st", "st++"])
    assert (ns.teacher_iters, ns.student_iters, ns.seed, ns.methods) == (60, None, 3, ["st", "st++"])
    params = demo._overrides(ns, demo.SEG_DEMO_PARAMS)
    assert params["seed"] == 3 and params["teacher_iters"] == 60 and "threshold_rule" not in params
    assert ns.num_labeled is None  # the demo's own split
    assert demo_arguments(60, None, 3, ["zoph"], num_labeled=24).num_labeled == 24


def test_another_labeled_size_is_named_in_the_table_and_a_size_below_one_is_refused():
    from benchmarks.quality import main

    row = {
        "seed": 0,
        "metric": "bbox_mAP",
        "teacher": 0.1,
        "students": {"zoph": 0.11},
        "controls": {"zoph": 0.1},
        "iters": {"teacher": 900, "zoph": 900},
        "num_labeled": 24,
    }
    assert "1 seeds; 24 labeled images; teacher 900 it;" in table([row], "detection", ["zoph"])
    assert "labeled images" not in table([row | {"num_labeled": None}], "detection", ["zoph"])
    with pytest.raises(SystemExit) as exit_info:  # refused before any data is prepared
        main(["--task", "detection", "--num-labeled", "0"])
    assert exit_info.value.code == 2


def test_table_reports_the_st_ablation_beside_the_control():
    labels = {"strong": 0.44, "strong_no_hue": 0.50, "none": 0.53}
    row = {
        "seed": 0,
        "metric": "mIoU",
        "teacher": 0.5,
        "students": {"st": 0.44},
        "controls": {"st": 0.59},
        "iters": {"teacher": 324, "st": 972},
        "st_ablation": {"pseudo": labels, "ground truth": {"strong": 0.56, "strong_no_hue": 0.66, "none": 0.66}},
    }
    text = table([row], "segmentation", ["st"])
    assert (
        "| seed | control | pseudo, strong | pseudo, strong_no_hue | pseudo, none | ground truth, strong "
        "| ground truth, strong_no_hue | ground truth, none |"
    ) in text
    assert "| 0 | 0.5900 | 0.4400 | 0.5000 | 0.5300 | 0.5600 | 0.6600 | 0.6600 |" in text


def test_the_oracle_shards_hold_the_ground_truth_in_the_pseudo_masks_format(tmp_path):
    """--st-ablation's ground truth goes where the teacher's pseudo masks go: one shard per
    pseudo-mask shard, every pixel kept at confidence 1, the labeled set's label map applied,
    the images the teacher skipped left out; read back by the students' reader."""
    import numpy as np
    from PIL import Image

    from benchmarks.quality import ground_truth_shards
    from selftrain.kinds import KINDS
    from selftrain.stage import read_pseudo_masks
    from storage.schemas import SEG_IMAGE_STATS, UNLABELED_IMAGES, table_from_rows, to_parquet_bytes
    from storage.store import ArtifactStore

    kind = KINDS["segmentation"]
    store = ArtifactStore(str(tmp_path / "store"))
    (tmp_path / "ann").mkdir()
    truth, images, stats = {}, [], []
    for i, (h, w) in enumerate(((5, 7), (6, 4), (3, 3))):
        name = f"u{i}.jpg"
        stored = (np.arange(h * w, dtype=np.uint8).reshape(h, w) % 3) * 100  # 0, 100, 200 as stored
        Image.fromarray(stored).save(tmp_path / "ann" / f"u{i}_mask.png")
        truth[name] = stored // 100  # label_map 100 -> 1, 200 -> 2
        images.append({"image_id": name, "image_uri": f"s3://b/u/{name}", "size": 1})
        status = "skipped" if i == 2 else "ok"  # the teacher could not read the third image
        stats.append({"image_id": name, "image_uri": f"s3://b/u/{name}", "status": status, "height": h, "width": w})
    shard = store.stage_ref("d", "shard", 1, "", {}, {"i": 0})
    with store.writer(shard, meta={}) as w:
        w.write_bytes("images.parquet", to_parquet_bytes(table_from_rows(images, UNLABELED_IMAGES), UNLABELED_IMAGES))
    pseudo = store.stage_ref("d", kind.pseudo_stage, kind.pseudo_version, "", {"shard": shard}, {})
    with store.writer(pseudo, meta={"shard": f"shard/{shard.key}"}) as w:
        w.write_bytes("stats.parquet", to_parquet_bytes(table_from_rows(stats, SEG_IMAGE_STATS), SEG_IMAGE_STATS))
    gt_dir, label_map = str(tmp_path / "ann"), {100: 1, 200: 2}
    (oracle,) = ground_truth_shards(store, [pseudo], gt_dir, 3, "_mask.png", label_map)
    assert ground_truth_shards(store, [pseudo], gt_dir, 3, "_mask.png", label_map) == [oracle]  # stored once
    masks, read_stats = read_pseudo_masks(store, [oracle], confidence=True)
    got = {image_id: (label, confidence) for image_id, label, confidence in masks}
    assert sorted(got) == ["u0.jpg", "u1.jpg"]
    for name, (label, confidence) in got.items():
        assert np.array_equal(label, truth[name]) and (confidence == 255).all()
    assert {s["image_id"]: (s["height"], s["width"]) for s in read_stats} == {"u0.jpg": (5, 7), "u1.jpg": (6, 4)}
    Image.fromarray(np.zeros((5, 7), dtype=np.uint8)).save(tmp_path / "ann" / "u0_mask.png")  # changed content
    (changed,) = ground_truth_shards(store, [pseudo], gt_dir, 3, "_mask.png", label_map)
    assert changed != oracle  # keyed by the masks it holds: a changed ground truth is not reused stale
    (tmp_path / "ann" / "u1_mask.png").unlink()
    other = store.stage_ref("d", "shard", 1, "", {}, {"i": 1})
    with store.writer(other, meta={}) as w:
        w.write_bytes("images.parquet", to_parquet_bytes(table_from_rows(images, UNLABELED_IMAGES), UNLABELED_IMAGES))
    again = store.stage_ref("d", kind.pseudo_stage, kind.pseudo_version, "", {"shard": other}, {})
    with store.writer(again, meta={"shard": f"shard/{other.key}"}) as w:
        w.write_bytes("stats.parquet", to_parquet_bytes(table_from_rows(stats, SEG_IMAGE_STATS), SEG_IMAGE_STATS))
    with pytest.raises(FileNotFoundError, match=r"no ground-truth mask for s3://b/u/u1.jpg under"):
        ground_truth_shards(store, [again], gt_dir, 3, "_mask.png", label_map)
    # a 16-bit mask whose 257 would wrap to class 1 in the uint8 format, and a value the label
    # map leaves unmapped (200 with 3 classes), are refused naming the image, not stored wrong
    Image.fromarray(np.full((5, 7), 257, dtype=np.uint16)).save(tmp_path / "ann" / "u0_mask.png")
    with pytest.raises(
        ValueError,
        match=r"u0_mask.png \(of s3://b/u/u0.jpg\) holds values \[257\] outside 0..255",
    ):
        ground_truth_shards(store, [pseudo], gt_dir, 3, "_mask.png", label_map)
    Image.fromarray(np.full((5, 7), 200, dtype=np.uint8)).save(tmp_path / "ann" / "u0_mask.png")
    with pytest.raises(
        ValueError, match=r"u0_mask.png \(of s3://b/u/u0.jpg\) has values \[200\] outside the 3 classes"
    ):
        ground_truth_shards(store, [pseudo], gt_dir, 3, "_mask.png", {100: 1})
    # a mask of another size than its image is refused, not trained on misaligned
    Image.fromarray(np.zeros((7, 5), dtype=np.uint8)).save(tmp_path / "ann" / "u0_mask.png")
    with pytest.raises(ValueError, match=r"u0_mask.png \(of s3://b/u/u0.jpg\) is 5x7 but its image is 7x5"):
        ground_truth_shards(store, [pseudo], gt_dir, 3, "_mask.png", label_map)


def test_table_names_a_strong_augmentation_other_than_the_papers_and_the_ablation_refuses_one():
    from benchmarks.quality import main

    row = {
        "seed": 0,
        "metric": "mIoU",
        "teacher": 0.5,
        "students": {"st": 0.6},
        "controls": {"st": 0.59},
        "iters": {"teacher": 972, "st": 2916},
        "strong_aug": "strong_no_hue",
    }
    assert "st student and its control 2916 it; the students' strong augmentation 'strong_no_hue'" in table(
        [row], "segmentation", ["st"]
    )
    assert "strong augmentation" not in table([row | {"strong_aug": "strong"}], "segmentation", ["st"])
    for argv in (
        ["--task", "segmentation", "--methods", "st", "--st-ablation", "--strong-aug", "none"],  # trains each
        ["--task", "detection", "--strong-aug", "none"],  # zoph students have no strong augmentation
        ["--task", "segmentation", "--methods", "st", "--strong-aug", "strong_typo"],  # no such file
    ):
        with pytest.raises(SystemExit) as exit_info:  # refused before any data is prepared
            main(argv)
        assert exit_info.value.code == 2


def test_each_trainings_checkpoint_validations_are_read_and_tabled(tmp_path):
    from benchmarks.quality import checkpoint_validations
    from selftrain.kinds import KINDS
    from storage.store import ArtifactStore

    store = ArtifactStore(str(tmp_path))
    model = store.stage_ref("d", "train", 1, "", {}, {"i": 0})
    history = [  # training logs between the validations (IoUMetric reports percentages)
        {"iter": 50, "loss": 0.9},
        {"mIoU": 58.54, "aAcc": 86.0, "step": 0},
        {"iter": 1000, "loss": 0.1},
        {"mIoU": 44.69, "aAcc": 76.7, "step": 0},
        {"mIoU": 47.25, "aAcc": 77.2, "step": 0},
    ]
    with store.writer(model, meta={}) as w:
        w.write_json("history.json", history)
    assert checkpoint_validations(store, model, KINDS["segmentation"]) == pytest.approx([0.5854, 0.4469, 0.4725])
    row = {
        "seed": 0,
        "metric": "mIoU",
        "teacher": 0.5925,
        "students": {"st": 0.5154},
        "controls": {"st": 0.4725},
        "iters": {"teacher": 972, "st": 2916},
        "validations": {
            "teacher": [0.5, 0.58, 0.5925],
            "st": [0.49, 0.5165, 0.5154],
            "st control": [0.5854, 0.4469, 0.4725],
        },
    }
    text = table([row], "segmentation", ["st"])
    assert "| 0 | st control | 2916 | 0.5854, 0.4469, 0.4725 |" in text
    assert "| 0 | teacher | 972 | 0.5000, 0.5800, 0.5925 |" in text


def test_the_models_on_the_pool_are_tabled_with_their_paired_differences():
    rows = [
        {
            "seed": s,
            "metric": "bbox_mAP",
            "teacher": 0.07,
            "students": {"zoph": 0.07},
            "controls": {"zoph": 0.07},
            "iters": {"teacher": 900, "zoph": 900},
            "pool": {"teacher": 0.15, "zoph": zoph, "zoph control": control},
        }
        for s, zoph, control in ((0, 0.12, 0.14), (1, 0.13, 0.14))
    ]
    text = table(rows, "detection", ["zoph"])
    header = "| seed | teacher | zoph | zoph control |\n| --- | --- | --- | --- |\n"
    assert header + "| 0 | 0.1500 | 0.1200 | 0.1400 |" in text
    # zoph - control: -0.02, -0.01 -> mean -0.015, SD 0.0071, no win; zoph - teacher: -0.03, -0.02
    assert "| zoph - zoph control | -0.0150 | 0.0071 | 0/2 |" in text
    assert "| zoph - teacher | -0.0250 | 0.0071 | 0/2 |" in text
    assert "pool" not in table([dict(rows[0], pool=None)], "detection", ["zoph"])


def test_the_pool_is_a_held_out_set_of_the_labeled_sets_kind():
    from benchmarks.quality import pool_set
    from flows.params import CocoSet, SegSet, SelfTrainingParams

    det = SelfTrainingParams(
        dataset="d",
        task="detection",
        labeled=CocoSet(ann_file="/d/labeled.json", image_root="/d/images"),
        val=CocoSet(ann_file="/d/val.json", image_root="/d/images"),
        unlabeled="/d/images/unlabeled",
        unlabeled_gt="/d/unlabeled_gt.json",
    )
    assert pool_set(det) == CocoSet(ann_file="/d/unlabeled_gt.json", image_root="/d/images")
    labeled = SegSet(img_dir="/s/l", ann_dir="/s/la", classes=["bg", "a"], label_map={255: 1}, split="/s/t.txt")
    seg = SelfTrainingParams(
        dataset="s",
        task="segmentation",
        labeled=labeled,
        val=SegSet(img_dir="/s/v", ann_dir="/s/va", classes=["bg", "a"]),
        unlabeled="/s/u",
        unlabeled_gt="/s/ua",
    )
    pool = pool_set(seg)
    assert (pool.img_dir, pool.ann_dir, pool.split, pool.label_map) == ("/s/u", "/s/ua", None, {255: 1})
