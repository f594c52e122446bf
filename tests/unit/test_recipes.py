"""The papers' recipes by default, each value pinned (Zoph et al. 2020; ST / ST++, Yang et al.
2022 and its reference code); the project's own choices are documented, non-default options."""

from __future__ import annotations

import json

import pytest

from deploy.deployments import demo_parameters
from flows.params import SelfTrainingParams
from selftrain.mm.configs import ConfigError, epoch_matched_iters, oversample_times


def test_st_students_train_the_teachers_epochs_over_their_own_set():
    # 16 labeled (doubled in the teacher's epochs: fewer than 200), 96 pseudo: the student's set
    # is 6 x 16 + 96 = 192 images, 6 teacher epochs of 32 -> 300 * 192 / 32 = 1800
    assert epoch_matched_iters(300, 16, 96, 3) == 1800
    # ST++ phase 1 on the 48 reliable images: 3 x 16 + 48 = 96 images -> 900
    assert epoch_matched_iters(300, 16, 48, 3) == 900
    # 12 labeled, 78 pseudo: ceil(6.5) = 7 -> 84 + 78 = 162 images; 900 * 162 / 24 = 6075
    assert epoch_matched_iters(900, 12, 78, 3) == 6075
    # 400 labeled (not doubled), 1000 pseudo: ceil(2.5) = 3 -> 2200 images; 600 * 2200 / 400 = 3300
    assert epoch_matched_iters(600, 400, 1000, 3) == 3300
    # rounded up to a multiple of k: 100 * (1 * 3 + 2) / 6 = 83.3 -> 84 (k = 4)
    assert epoch_matched_iters(100, 3, 2, 4) == 84
    assert oversample_times(3, 2) == 1
    with pytest.raises(ConfigError):
        epoch_matched_iters(0, 16, 96, 3)
    with pytest.raises(ConfigError, match="empty"):
        epoch_matched_iters(300, 0, 96, 3)


def _seg_params(**extra):
    seg = dict(img_dir="/d/img", ann_dir="/d/ann", classes=["background", "thing"])
    extra.setdefault("method", ["st", "st++"])
    return SelfTrainingParams(dataset="s", task="segmentation", labeled=seg, val=seg, unlabeled="/d/u", **extra)


def test_each_method_gets_its_papers_pseudo_label_threshold_and_teacher_augmentation():
    det = SelfTrainingParams(**{k: v for k, v in demo_parameters().items() if k != "score_threshold"})
    assert det.threshold_of("zoph") == 0.5  # Zoph et al. §3.2: boxes above 0.5
    assert det.teacher_aug == "S1" and det.zoph_batch == "double" and det.student_iters is None
    seg = _seg_params()
    assert seg.threshold_of("st") == seg.threshold_of("st++") == 0.0  # ST++: the plain argmax, no pixel ignored
    assert seg.threshold_of("zoph") == 0.5  # Zoph et al. (PASCAL): pixels under 0.5 confidence ignored
    assert seg.teacher_aug == "weak"  # ST++ trains its teacher with the weak augmentation
    assert _seg_params(score_threshold=0.5).threshold_of("st") == 0.5  # an explicit value applies to every method
    assert seg.threshold_rule == "fixed"  # the papers' fixed thresholds by default
    assert _seg_params(teacher_aug="S1").teacher_aug == "S1"
    st_det = SelfTrainingParams(**dict(demo_parameters(), method=["st"]))
    assert st_det.teacher_aug == "weak"
    mixed = SelfTrainingParams(**dict(demo_parameters(), method=["zoph", "st"]))
    assert mixed.teacher_aug == "S1"  # one shared teacher: the zoph student's preset


def test_explicit_student_iterations_must_keep_the_checkpoints_evenly_spaced():
    with pytest.raises(ValueError, match="student_iters"):
        SelfTrainingParams(**dict(demo_parameters(), student_iters=100, k=3))
    assert SelfTrainingParams(**dict(demo_parameters(), student_iters=99, k=3)).student_iters == 99


def test_the_deployments_use_the_papers_defaults():
    from deploy.deployments import DEPLOYMENTS

    for name, (_, parameters) in DEPLOYMENTS.items():
        fields = parameters()
        assert "score_threshold" not in fields or name == "demo", name
        assert "student_iters" not in fields or name == "demo", name
    voc = DEPLOYMENTS["voc"][1]()
    assert voc["teacher_iters"] == 80 * 1464 // 16  # the reference's PASCAL recipe
    json.dumps(voc)


@pytest.mark.parametrize(
    ("config", "scale", "crop"),
    [
        ("seg/deeplabv3plus_r101_512_voc12aug", (2048, 512), (512, 512)),  # mmseg's VOC aug pipeline
        ("seg/deeplabv3plus_r101_769_cityscapes", (2049, 1025), (769, 769)),  # mmseg's Cityscapes 769
        ("seg/deeplabv3plus_mnv2_128_cpu", (128, 128), (128, 128)),
    ],
)
def test_segmentation_training_resizes_around_the_image_scale_then_crops(config, scale, crop):
    from selftrain.mm.configs import load_config, seg_train_pipeline

    for aug in ("S1", "weak"):
        pipeline = seg_train_pipeline(load_config(config, "seg"), aug)
        resize = next(t for t in pipeline if t["type"] == "RandomResize")
        assert resize["scale"] == scale and resize["keep_ratio"]
        assert next(t for t in pipeline if t["type"] == "RandomCrop")["crop_size"] == crop


def test_each_methods_papers_tta_scales_by_default():
    seg = _seg_params()
    assert seg.tta_scales == [0.5, 0.75, 1.0, 1.5, 2.0]  # ST++'s reference label.py
    zoph = _seg_params(method="zoph")
    assert zoph.tta_scales == [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]  # Zoph et al.'s PASCAL views
    assert zoph.threshold_of("zoph") == 0.5 and zoph.teacher_aug == "S1"
    with pytest.raises(ValueError, match="different TTA scales"):
        _seg_params(method=["zoph", "st"], score_threshold=0.5)
    # thresholds apply per student, after inference: methods with different ones share a run
    both = _seg_params(method=["zoph", "st"], tta_scales=[1.0])
    assert both.threshold_of("zoph") == 0.5 and both.threshold_of("st") == 0.0
    det = SelfTrainingParams(**dict(demo_parameters(), method=["zoph", "st"], tta_scales=None))
    assert det.tta_scales == [1.0]  # flip TTA at the test scale for boxes (Zoph et al.)
