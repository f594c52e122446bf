"""Stage configs are files (model_configs/stages/ on model_configs/_base_/): a run only fills
paths, the checkpoint interval, the schedule's length and the data lists."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from mmengine.config import Config

from selftrain.mm import configs as C
from selftrain.mm.configs import files as F

SRC = C.CocoSource("/data/lab.json", "/data/images", ("tree",))


@pytest.mark.parametrize("name", C.stage_names())
def test_every_stage_file_loads_with_mmengine_and_marks_what_a_run_fills(name):
    cfg = Config.fromfile(os.path.join(F.stage_configs_dir(), f"{name}.py"))
    text = json.dumps(cfg.to_dict(), default=repr)
    assert '"default_scope": "mm' in text
    assert "null" in text  # what a run fills is None in the file


def test_stage_names_are_the_recipes():
    assert C.stage_names() == [
        "det_student_st",
        "det_student_zoph",
        "det_teacher",
        "det_test",
        "seg_student_st",
        "seg_student_zoph",
        "seg_teacher",
        "seg_test",
    ]
    with pytest.raises(C.ConfigError, match="no stage config 'det_studnet'.*det_student_zoph"):
        C.stage_template("det_studnet")


def test_the_zoph_student_recipe_reads_from_its_files():
    tpl = C.stage_template("det_student_zoph")
    assert tpl["model"]["type"] == "LossNormalizedDetector"
    assert tpl["train_dataloader"]["sampler"] == dict(
        type="MultiSourceSampler", batch_size=None, source_ratio=[1, 1], shuffle=True
    )
    assert [d["type"] for d in tpl["train_dataloader"]["dataset"]["datasets"]] == ["CocoDataset", "CocoDataset"]
    assert not any(k.startswith("_") for k in tpl)  # helper variables are not part of a config


def test_a_value_changed_in_a_base_file_reaches_every_built_config(tmp_path, monkeypatch):
    copy = tmp_path / "model_configs"
    shutil.copytree(F.MODEL_CONFIGS, copy)
    schedule = copy / "_base_" / "schedules" / "iter_cosine.py"
    schedule.write_text(schedule.read_text().replace("eta_min_ratio=0.05", "eta_min_ratio=0.25"))
    runtime = copy / "_base_" / "default_runtime.py"
    runtime.write_text(runtime.read_text().replace("window_size=20", "window_size=7"))
    monkeypatch.setattr(F, "MODEL_CONFIGS", str(copy))
    model_cfg = C.load_config("det/retinanet_mnv2_256_cpu")
    cfg = C.det_train_config(model_cfg, work_dir="/w", labeled=SRC, val=None, iters=30, k=3, seed=0, pretrained=False)
    assert cfg.param_scheduler[-1]["eta_min_ratio"] == 0.25
    assert cfg.log_processor.window_size == 7


def test_a_run_fills_paths_interval_schedule_and_batch():
    model_cfg = C.load_config("det/retinanet_mnv2_256_cpu")
    cfg = C.det_train_config(model_cfg, work_dir="/w", labeled=SRC, val=SRC, iters=60, k=3, seed=5, pretrained=False)
    assert cfg.default_hooks.checkpoint.interval == 20  # 60 iterations / K=3
    assert cfg.default_hooks.checkpoint.save_best == "coco/bbox_mAP"
    assert cfg.train_cfg.max_iters == 60 and cfg.train_cfg.val_interval == 20
    warmup = min(model_cfg.warmup_iters, 30)
    assert [s["type"] for s in cfg.param_scheduler] == ["LinearLR", "CosineAnnealingLR"]
    assert cfg.param_scheduler[0]["end"] == warmup and cfg.param_scheduler[1]["begin"] == warmup
    assert cfg.train_dataloader.batch_size == model_cfg.batch_size
    assert cfg.train_dataloader.dataset.ann_file == "/data/lab.json"
    assert cfg.train_dataloader.dataset.data_prefix.img == "/data/images/"
    assert cfg.randomness.seed == 5 and cfg.work_dir == "/w"
    no_val = C.det_train_config(model_cfg, work_dir="/w", labeled=SRC, val=None, iters=60, k=3, seed=5)
    assert "val_dataloader" not in no_val and "save_best" not in no_val.default_hooks.checkpoint
    assert no_val.train_cfg.val_interval == 61  # never


def test_config_show_previews_a_stage_from_parameters(tmp_path, capsys):
    from app.cli import main
    from deploy.deployments import demo_parameters

    params = tmp_path / "params.json"
    params.write_text(json.dumps(demo_parameters()))
    if not os.path.exists(demo_parameters()["labeled"]["ann_file"]):
        coco = {"images": [{"id": 1, "file_name": "a.png", "width": 8, "height": 8}], "annotations": []}
        coco["categories"] = [{"id": 1, "name": "tree"}]
        (tmp_path / "lab.json").write_text(json.dumps(coco))
        fields = dict(demo_parameters())
        fields["labeled"] = dict(fields["labeled"], ann_file=str(tmp_path / "lab.json"))
        params.write_text(json.dumps(fields))
    for stage, model_type in (("teacher", "RetinaNet"), ("student", "LossNormalizedDetector"), ("evaluate", None)):
        assert main(["config", "show", str(params), "--stage", stage]) == 0
        text = capsys.readouterr().out
        assert text.startswith(f"# selftrain config show: stage {stage}")
        cfg = Config.fromstring(text, ".py")
        if model_type:
            assert cfg.model.type == model_type
        else:
            assert cfg.test_evaluator.type == "CocoMetric"
    assert main(["config", "show", str(params), "--stage", "student", "--method", "st", "--num-pseudo", "60"]) == 0
    cfg = Config.fromstring(capsys.readouterr().out, ".py")
    assert cfg.train_dataloader.dataset.datasets[0].type == "RepeatDataset"
    jitter = next(t for t in cfg.train_dataloader.dataset.datasets[1].pipeline if t.type == "ColorJitter")
    assert jitter.hue == 0.25  # the reference's strong augmentation by default
    params.write_text(json.dumps(dict(json.loads(params.read_text()), method=["st"], strong_aug="none")))
    assert main(["config", "show", str(params), "--stage", "student"]) == 0
    pseudo_set = Config.fromstring(capsys.readouterr().out, ".py").train_dataloader.dataset.datasets[1]
    assert "ColorJitter" not in {t.type for t in pseudo_set.pipeline}  # the run's strong_aug, shown
    assert main(["config", "show", "nothing-here"]) == 2


def test_a_pseudo_set_of_image_urls_loads_its_images_where_they_are(tmp_path):
    """Pseudo boxes name each image by its URI (s3://..., memory://...): no prefix is added."""
    import io

    import fsspec
    import numpy as np
    from mmdet.registry import DATASETS
    from mmengine.registry import init_default_scope
    from PIL import Image

    import selftrain.mm  # noqa: F401

    buf = io.BytesIO()
    Image.fromarray(np.full((32, 48, 3), 7, np.uint8)).save(buf, "PNG")
    fsspec.filesystem("memory").pipe("memory://pool/u0.png", buf.getvalue())
    coco = {
        "images": [{"id": 1, "file_name": "memory://pool/u0.png", "width": 48, "height": 32}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 10], "area": 100, "iscrowd": 0}],
        "categories": [{"id": 1, "name": "tree"}],
    }
    (tmp_path / "pseudo.json").write_text(json.dumps(coco))
    pipeline = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations", with_bbox=True)]
    init_default_scope("mmdet")
    ds = DATASETS.build(C.coco_dataset(C.CocoSource(str(tmp_path / "pseudo.json"), "", ("tree",)), pipeline, False))
    assert ds[0]["img_path"] == "memory://pool/u0.png" and ds[0]["img"].shape == (32, 48, 3)
    assert C.coco_dataset(SRC, pipeline, False)["data_prefix"]["img"] == "/data/images/"


def test_editing_a_recipe_file_changes_the_keys_of_exactly_the_stages_built_from_it(tmp_path, monkeypatch):
    copy = tmp_path / "model_configs"
    shutil.copytree(F.MODEL_CONFIGS, copy)
    monkeypatch.setattr(F, "MODEL_CONFIGS", str(copy))

    def digests():
        return {
            "teacher": C.recipe_digest((C.training_stage("det", None),), ("S1",)),
            "zoph": C.recipe_digest((C.training_stage("det", "zoph"),), ("S1",)),
            "st": C.recipe_digest((C.training_stage("det", "st"),), ("weak", "strong")),
            "seg st": C.recipe_digest((C.training_stage("seg", "st"),), ("weak", "strong")),
            "seg st no hue": C.recipe_digest((C.training_stage("seg", "st"),), ("weak", "strong_no_hue")),
            "seg st weak only": C.recipe_digest((C.training_stage("seg", "st"),), ("weak",)),
            "eval": C.recipe_digest(("det_test",)),
            "tta": C.recipe_digest(tta="det_default.py"),
        }

    def edit(path, old, new):
        text = path.read_text()
        assert old in text
        path.write_text(text.replace(old, new))

    before = digests()
    assert len(set(before.values())) == len(before)
    edit(copy / "_base_" / "datasets" / "semi_coco_detection_zoph.py", "shuffle=True", "shuffle=False")
    after = digests()
    assert [k for k in before if before[k] != after[k]] == ["zoph"]
    edit(copy / "aug" / "strong.py", "prob=0.8", "prob=0.7")
    again = digests()
    assert [k for k in after if after[k] != again[k]] == ["st", "seg st"]  # not the students of the other files
    edit(copy / "aug" / "strong_no_hue.py", "prob=0.8", "prob=0.7")
    assert [k for k, v in digests().items() if v != again[k]] == ["seg st no hue"]
    again = digests()
    edit(copy / "tta" / "det_default.py", "merge_nms_iou = 0.5", "merge_nms_iou = 0.6")
    last = digests()
    assert [k for k, v in last.items() if v != again[k]] == ["tta"]
    edit(copy / "_base_" / "default_runtime.py", "window_size=20", "window_size=10")
    changed = [k for k, v in digests().items() if v != last[k]]
    assert changed == ["teacher", "zoph", "st", "seg st", "seg st no hue", "seg st weak only"]  # not evaluation
    again = digests()
    edit(copy / "pipelines" / "det.py", "allow_negative_crop=False", "allow_negative_crop=True")
    changed = [k for k, v in digests().items() if v != again[k]]
    assert changed == ["teacher", "zoph", "st", "eval", "tta"]  # every detection stage; not segmentation


def test_pipelines_are_files_a_run_fills(tmp_path, monkeypatch):
    model_cfg = C.load_config("det/retinanet_mnv2_256_cpu")
    w, h = model_cfg.img_scale
    s3 = C.det_train_pipeline(model_cfg, "S3")
    # the file's steps, with the preset's policy spliced at "{policy}" and its values filled
    assert [t["type"] for t in s3] == [
        "LoadImageFromFile",
        "LoadAnnotations",
        "AutoAugment",
        "RandomResize",
        "RandomCrop",
        "FilterAnnotations",
        "RandomFlip",
        "PackDetInputs",
    ]
    assert s3[3]["scale"] == (w, h) and tuple(s3[3]["ratio_range"]) == (0.5, 2.0) and s3[4]["crop_size"] == (h, w)
    st = C.det_train_pipeline(model_cfg, "weak", strong="strong")
    assert [t["type"] for t in st][-3:] == ["GaussianBlur", "RandomFillCutOut", "PackDetInputs"]
    assert [t["type"] for t in C.det_test_pipeline(model_cfg, with_ann=False, skip_unreadable=True)] == [
        "LoadImageOrMarkUnreadable",
        "Resize",
        "PackDetInputs",
    ]
    tta = C.seg_tta_pipeline(C.load_config("seg/deeplabv3plus_mnv2_128_cpu", "seg"), [0.5, 1.0], flip=False)
    resizes, flips, _ = tta[1]["transforms"]
    assert len(resizes) == 2 and [f["prob"] for f in flips] == [0.0]
    # a template with a value this code does not fill is refused, naming the file and the step
    copy = tmp_path / "model_configs"
    shutil.copytree(F.MODEL_CONFIGS, copy)
    monkeypatch.setattr(F, "MODEL_CONFIGS", str(copy))
    path = copy / "pipelines" / "det.py"
    path.write_text(path.read_text().replace("min_gt_bbox_wh=(1, 1)", "min_gt_bbox_wh=None"))
    with pytest.raises(C.ConfigError, match=r"pipelines/det.py train_pipeline: step 5 \(FilterAnnotations\)"):
        C.det_train_pipeline(model_cfg, "S1")
    path.write_text(path.read_text().replace("min_gt_bbox_wh=None", "min_gt_bbox_wh=(1, 1)"))
    path.write_text(path.read_text().replace('"{strong}"', '"{strnog}"'))
    with pytest.raises(C.ConfigError, match=r"markers \['\{strnog\}'\] were not filled"):
        C.det_train_pipeline(model_cfg, "S1")


def test_config_show_previews_users_sets_as_registration_normalises_them(tmp_path, capsys):
    from app.cli import main

    coco = {
        "images": [{"id": 5, "file_name": "a.png", "width": 8, "height": 8}],
        "annotations": [{"id": 1, "image_id": 5, "category_id": 42, "bbox": [1, 1, 3, 3], "area": 9, "iscrowd": 0}],
        "categories": [{"id": 17, "name": "zebra"}, {"id": 3, "name": "cat"}, {"id": 42, "name": "apple"}],
    }
    (tmp_path / "lab.json").write_text(json.dumps(coco))
    (tmp_path / "img").mkdir()
    det = dict(ann_file=str(tmp_path / "lab.json"), image_root=str(tmp_path / "img"))
    params = tmp_path / "det.json"
    params.write_text(json.dumps(dict(dataset="d", labeled=det, val=det, unlabeled=str(tmp_path / "img"))))
    assert main(["config", "show", str(params)]) == 0
    cfg = Config.fromstring(capsys.readouterr().out, ".py")
    # label i is the i-th category by id, as every stage of a run sees it
    assert cfg.train_dataloader.dataset.metainfo.classes == ("cat", "zebra", "apple")
    assert cfg.train_dataloader.dataset.ann_file.startswith("<registered copy of ")
    seg = dict(img_dir=str(tmp_path / "img"), ann_dir=str(tmp_path / "img"), classes=["background", "thing"])
    params.write_text(json.dumps(dict(dataset="s", task="segmentation", labeled=seg, val=seg, unlabeled="/u")))
    assert main(["config", "show", str(params), "--stage", "student"]) == 0
    cfg = Config.fromstring(capsys.readouterr().out, ".py")
    assert cfg.train_dataloader.dataset.datasets[0].type == "RepeatDataset"
    assert main(["config", "show", str(params), "--stage", "student", "--method", "zoph"]) == 0
    assert Config.fromstring(capsys.readouterr().out, ".py").model.type == "LossNormalizedSegmentor"
    params.write_text("{")
    assert main(["config", "show", str(params)]) == 2
    assert "is not JSON" in capsys.readouterr().err
