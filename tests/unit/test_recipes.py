"""The papers' recipes by default, each value pinned (Zoph et al. 2020; ST / ST++, Yang et al.
2022 and its reference code); the project's own choices are documented, non-default options."""

from __future__ import annotations

import json

import pytest

from deploy.deployments import demo_parameters
from flows.params import SelfTrainingParams
from selftrain.mm.configs import ConfigError, epoch_matched_iters, oversample_times


def test_st_students_train_the_teachers_epochs_over_their_own_set():
    # 16 labeled, 96 pseudo: the set is 6 x 16 + 96 = 192 images, 12 times the labeled set
    assert epoch_matched_iters(300, 16, 96, 3) == 3600
    # ST++ phase 1 on the 48 reliable images: 3 x 16 + 48 = 96 images
    assert epoch_matched_iters(300, 16, 48, 3) == 1800
    # 12 labeled, 78 pseudo: ceil(6.5) = 7 -> 84 + 78 = 162 images; 900 * 162 / 12 = 12150
    assert epoch_matched_iters(900, 12, 78, 3) == 12150
    # rounded up to a multiple of k: 100 * (1 * 3 + 2) / 3 = 166.7 -> 168 (k = 4)
    assert epoch_matched_iters(100, 3, 2, 4) == 168
    assert oversample_times(3, 2) == 1
    with pytest.raises(ConfigError):
        epoch_matched_iters(0, 16, 96, 3)
    with pytest.raises(ConfigError, match="empty"):
        epoch_matched_iters(300, 0, 96, 3)


def _seg_params(**extra):
    seg = dict(img_dir="/d/img", ann_dir="/d/ann", classes=["background", "thing"])
    return SelfTrainingParams(
        dataset="s", task="segmentation", labeled=seg, val=seg, unlabeled="/d/u", method=["st", "st++"], **extra
    )


def test_each_method_gets_its_papers_pseudo_label_threshold_and_teacher_augmentation():
    det = SelfTrainingParams(**{k: v for k, v in demo_parameters().items() if k != "score_threshold"})
    assert det.score_threshold == 0.5  # Zoph et al. §3.2: boxes above 0.5
    assert det.teacher_aug == "S1" and det.zoph_batch == "double" and det.student_iters is None
    seg = _seg_params()
    assert seg.score_threshold == 0.0  # ST++: the plain argmax, no pixel ignored
    assert seg.teacher_aug == "weak"  # ST++ trains its teacher with the weak augmentation
    assert _seg_params(score_threshold=0.5).score_threshold == 0.5  # an explicit value stays
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
