"""Zoph et al. (2020) loss normalisation: L = 1/(1+a) * (Lh + a * (EMA(Lh)/EMA(Lp)) * Lp).

All expected numbers are computed by hand in the comments.
"""

from __future__ import annotations

import math

import pytest
import torch
from mmdet.models.detectors.base import BaseDetector
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData
from torch import nn

import selftrain.mm  # noqa: F401  (registers the modules)
from selftrain.mm import loss_normalization as ln
from selftrain.mm.loss_normalization import (
    REVISE_KEYS,
    DropEmptyBranchesDataPreprocessor,
    LossNormalizedDetector,
    ema_update,
    normalized_loss,
)


@pytest.fixture(autouse=True)
def _mmdet_scope():
    from mmengine.registry import init_default_scope

    init_default_scope("mmdet")


# --------------------------------------------------------------------------- 1. pure maths


def test_normalized_loss_hand_computed():
    # 1/(1+1) * (2 + 1 * (1/2) * 4) = 0.5 * 4 = 2.0
    assert normalized_loss(2.0, 4.0, 1.0, 2.0, 1.0) == 2.0
    # a = 3: 1/4 * (2 + 3 * (3/1) * 1) = 1/4 * 11 = 2.75
    assert normalized_loss(2.0, 1.0, 3.0, 1.0, 3.0) == pytest.approx(2.75)
    # a = 0: exactly Lh, even with a non-finite Lp
    lh = torch.tensor(1.2345678)
    assert normalized_loss(lh, torch.tensor(4.0), 1.0, 2.0, 0.0) is lh
    assert normalized_loss(lh, torch.tensor(math.nan), 1.0, 2.0, 0.0) is lh
    with pytest.raises(ValueError):
        normalized_loss(1.0, 1.0, 1.0, 1.0, -1.0)


def test_normalized_loss_gradients():
    lh = torch.tensor(2.0, requires_grad=True)
    lp = torch.tensor(4.0, requires_grad=True)
    ema_h = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    ema_p = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    a = 3.0
    out = normalized_loss(lh, lp, ema_h, ema_p, a)
    assert out.dtype == torch.float32  # the float64 EMAs do not promote the loss
    out.backward()
    # dL/dLp = a/(1+a) * ema_h/ema_p = 3/4 * 1/2 = 0.375; dL/dLh = 1/(1+a) = 0.25
    assert lp.grad.item() == pytest.approx(0.375)
    assert lh.grad.item() == pytest.approx(0.25)
    assert ema_h.grad is None and ema_p.grad is None


# --------------------------------------------------------------------------- 2. EMA


def test_ema_update_by_hand():
    assert ema_update(None, 2.0, 0.5) == 2.0  # the first value initialises
    assert ema_update(2.0, 4.0, 0.5) == 3.0  # 0.5*2 + 0.5*4
    assert ema_update(3.0, 1.0, 0.5) == 2.0  # 0.5*3 + 0.5*1
    assert ema_update(10.0, 20.0, 0.9997) == pytest.approx(10.003)  # 0.9997*10 + 0.0003*20
    assert ema_update(7.0, 17.0, 0.9) == pytest.approx(8.0)  # 0.9*7 + 0.1*17


# --------------------------------------------------------------------------- 3. wrapper, stub detector


@MODELS.register_module(force=True)
class StubDet(BaseDetector):
    """loss = w * mean(inputs), split over a tensor and a list entry, plus a non-loss entry."""

    def __init__(self, data_preprocessor=None, init_cfg=None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.w = nn.Parameter(torch.tensor(1.0))

    def loss(self, batch_inputs, batch_data_samples):
        m = batch_inputs.float().mean()
        return {
            "loss_cls": self.w * m / 2,
            "loss_bbox": [self.w * m / 4, self.w * m / 4],
            "acc": torch.tensor(99.0),  # not summed
        }

    def predict(self, batch_inputs, batch_data_samples, rescale=True):
        return batch_data_samples

    def _forward(self, batch_inputs, batch_data_samples=None):
        return self.w * batch_inputs

    def extract_feat(self, batch_inputs):
        return (batch_inputs,)


def _batch(h=None, p=None, n=2):
    inputs, samples = {}, {}
    if h is not None:
        inputs["human"] = torch.full((n, 3, 4, 4), float(h))
        samples["human"] = [DetDataSample() for _ in range(n)]
    if p is not None:
        inputs["pseudo"] = torch.full((n, 3, 4, 4), float(p))
        samples["pseudo"] = [DetDataSample() for _ in range(n)]
    return inputs, samples


def _wrapper(alpha=1.0, decay=0.5, **kw):
    return LossNormalizedDetector(detector=dict(type="StubDet"), alpha=alpha, ema_decay=decay, **kw)


def test_wrapper_two_steps_by_hand():
    model = _wrapper()
    assert math.isnan(model.ema_human.item()) and model.ema_steps.item() == 0

    # step 1: Lh = 2, Lp = 4 -> EMAs initialised to 2 and 4, ratio 1/2
    # L = 1/2 * (2 + 1 * 0.5 * 4) = 2.0
    out = model.loss(*_batch(h=2.0, p=4.0))
    assert out["loss"].item() == pytest.approx(2.0)
    assert model.ema_human.item() == 2.0 and model.ema_pseudo.item() == 4.0
    assert model.ema_steps.item() == 1
    assert out["human_total"].item() == 2.0 and out["pseudo_total"].item() == 4.0
    assert out["pseudo_weight"].item() == pytest.approx(0.25)  # a * 2/4 / (1+a)
    assert out["human_weight"].item() == pytest.approx(0.5)
    assert out["human_cls"].item() == 1.0 and out["human_bbox"].item() == 1.0
    assert out["pseudo_acc"].item() == 99.0
    assert all("loss" not in k for k in out if k != "loss")
    assert all(not v.requires_grad for k, v in out.items() if k != "loss")
    # mmengine sums only 'loss'
    parsed, log_vars = model.parse_losses(out)
    assert parsed.item() == pytest.approx(2.0) and log_vars["loss"].item() == pytest.approx(2.0)
    # dL/dw = 1/2 * (2 + 0.5 * 4) = 2.0 (the ratio is a constant)
    parsed.backward()
    assert model.detector.w.grad.item() == pytest.approx(2.0)

    # step 2: Lh = 4, Lp = 2 -> EMA_h = 0.5*2 + 0.5*4 = 3, EMA_p = 0.5*4 + 0.5*2 = 3
    # L = 1/2 * (4 + 1 * 1 * 2) = 3.0
    out = model.loss(*_batch(h=4.0, p=2.0))
    assert out["loss"].item() == pytest.approx(3.0)
    assert model.ema_human.item() == 3.0 and model.ema_pseudo.item() == 3.0
    assert model.ema_steps.item() == 2
    assert out["ema_human"].item() == 3.0 and out["ema_pseudo"].item() == 3.0
    assert out["pseudo_weight"].item() == pytest.approx(0.5)
    assert model.ema_human.dtype == torch.float64 and model.ema_steps.dtype == torch.int64


def test_wrapper_default_decay_and_alpha():
    model = LossNormalizedDetector(detector=dict(type="StubDet"))
    assert model.alpha == 1.0 and model.ema_decay == 0.9997
    model.loss(*_batch(h=2.0, p=4.0))
    model.loss(*_batch(h=4.0, p=4.0))
    assert model.ema_human.item() == pytest.approx(0.9997 * 2 + 0.0003 * 4)


def test_wrapper_alpha_zero_gives_lh():
    model = _wrapper(alpha=0.0)
    out = model.loss(*_batch(h=2.0, p=4.0))
    assert out["loss"].item() == 2.0
    assert out["pseudo_weight"].item() == 0.0 and out["human_weight"].item() == 1.0
    out = model.loss(*_batch(h=3.0, p=40.0))
    assert out["loss"].item() == 3.0
    # EMAs are still tracked (0.5*4 + 0.5*40 = 22)
    assert model.ema_pseudo.item() == 22.0
    # pseudo-only batch with a = 0: no weight on pseudo labels
    out = model.loss(*_batch(p=4.0))
    assert out["loss"].item() == 0.0


def test_wrapper_without_normalisation_is_the_plain_weighted_loss():
    """normalize=False (the Appendix B baseline): L = Lh + a * Lp, whatever the EMAs."""
    model = _wrapper(alpha=4.0, normalize=False)
    out = model.loss(*_batch(h=2.0, p=4.0))  # 2 + 4 * 4 = 18
    assert out["loss"].item() == pytest.approx(18.0)
    assert out["human_weight"].item() == 1.0 and out["pseudo_weight"].item() == 4.0
    out = model.loss(*_batch(h=4.0, p=2.0))  # 4 + 4 * 2 = 12; EMAs still kept: 3 and 3
    assert out["loss"].item() == pytest.approx(12.0)
    assert model.ema_human.item() == 3.0 and model.ema_pseudo.item() == 3.0
    # dL/dw = Lh/w + a * Lp/w = 4 + 4 * 2 = 12
    out["loss"].backward()
    assert model.detector.w.grad.item() == pytest.approx(12.0)
    assert model.loss(*_batch(p=2.0))["loss"].item() == pytest.approx(8.0)  # pseudo only: a * Lp
    assert model.loss(*_batch(h=2.0))["loss"].item() == pytest.approx(2.0)  # human only: Lh
    # the normalised default at the same alpha: 1/5 * (4 + 4 * 1 * 2) = 2.4
    normalised = _wrapper(alpha=4.0)
    normalised.loss(*_batch(h=2.0, p=4.0))
    assert normalised.loss(*_batch(h=4.0, p=2.0))["loss"].item() == pytest.approx(2.4)


def test_wrapper_absent_branches():
    model = _wrapper()
    # human only on a fresh model: L = Lh, the pseudo EMA stays uninitialised
    out = model.loss(*_batch(h=2.0))
    assert out["loss"].item() == 2.0
    assert model.ema_human.item() == 2.0 and math.isnan(model.ema_pseudo.item())
    assert "ema_pseudo" not in out and "pseudo_total" not in out
    assert out["pseudo_weight"].item() == 0.0

    fresh = _wrapper()
    # pseudo only, no human EMA yet: L = Lp
    out = fresh.loss(*_batch(p=4.0))
    assert out["loss"].item() == 4.0 and math.isnan(fresh.ema_human.item())

    # both EMAs exist: pseudo only -> L = EMA_h/EMA_p * Lp
    model.loss(*_batch(h=2.0, p=4.0))  # EMA_h = 0.5*2+0.5*2 = 2, EMA_p = 4
    out = model.loss(*_batch(p=8.0))  # EMA_p = 0.5*4 + 0.5*8 = 6; L = 2/6 * 8 = 8/3
    assert model.ema_human.item() == 2.0 and model.ema_pseudo.item() == 6.0
    assert out["loss"].item() == pytest.approx(8.0 / 3.0)
    assert out["pseudo_weight"].item() == pytest.approx(1.0 / 3.0)

    # a zero-size branch counts as absent
    inputs, samples = _batch(h=2.0, p=4.0)
    inputs["pseudo"], samples["pseudo"] = inputs["pseudo"][:0], []
    assert model.loss(inputs, samples)["loss"].item() == 2.0

    with pytest.raises(ValueError, match="neither"):
        model.loss({}, {})
    with pytest.raises(ValueError, match="unknown branches"):
        model.loss({"sup": torch.zeros(1, 3, 4, 4)}, {"sup": [DetDataSample()]})
    with pytest.raises(TypeError, match="multi-branch"):
        model.loss(torch.zeros(1, 3, 4, 4), [DetDataSample()])


def test_wrapper_ema_is_rank_averaged(monkeypatch):
    """A fake second rank (human loss 4, no pseudo images) through the all_reduce('mean')."""
    calls = []

    def fake_all_reduce(data, op="sum", group=None):
        calls.append(op)
        other = torch.tensor([4.0, 0.0, 1.0, 0.0], dtype=data.dtype)  # [sum_h, sum_p, n_h, n_p]
        data.copy_((data + other) / 2)

    monkeypatch.setattr(ln, "all_reduce", fake_all_reduce)
    model = _wrapper()
    out = model.loss(*_batch(h=2.0, p=4.0))
    assert calls == ["mean"]
    # EMA_h = (2 + 4)/2 = 3 (both ranks); EMA_p = 4 (this rank only); L = 1/2 * (2 + 3/4 * 4) = 2.5
    assert model.ema_human.item() == 3.0 and model.ema_pseudo.item() == 4.0
    assert out["loss"].item() == pytest.approx(2.5)


def test_state_dict_round_trip_and_plain_keys(tmp_path):
    from mmengine.runner import load_checkpoint

    model = _wrapper()
    model.loss(*_batch(h=2.0, p=4.0))
    model.loss(*_batch(h=4.0, p=2.0))
    with torch.no_grad():
        model.detector.w.fill_(5.0)
    sd = model.state_dict()
    assert {"ema_human", "ema_pseudo", "ema_steps", "detector.w"} <= set(sd)

    other = _wrapper()
    other.load_state_dict(sd, strict=True)
    assert other.ema_human.item() == 3.0 and other.ema_pseudo.item() == 3.0
    assert other.ema_steps.item() == 2 and other.detector.w.item() == 5.0

    # plain (teacher) state dict: prefix-less keys, no EMA buffers; strict loading works
    student = _wrapper()
    res = student.load_state_dict({"w": torch.tensor(7.0)}, strict=True)
    assert not res.missing_keys and not res.unexpected_keys
    assert student.detector.w.item() == 7.0
    assert student.ema_steps.item() == 0 and math.isnan(student.ema_human.item())

    # the same through mmengine's load_from path (its own load_state_dict)
    teacher = MODELS.build(dict(type="StubDet"))
    with torch.no_grad():
        teacher.w.fill_(9.0)
    torch.save({"state_dict": teacher.state_dict(), "meta": {}}, tmp_path / "teacher.pth")
    student = _wrapper()
    load_checkpoint(student, str(tmp_path / "teacher.pth"), map_location="cpu", strict=True)
    assert student.detector.w.item() == 9.0 and student.ema_steps.item() == 0

    # student checkpoint -> plain detector, as inference loads it (EMA buffers are not the
    # detector's: with strict loading they would be unexpected keys)
    torch.save({"state_dict": sd}, tmp_path / "student.pth")
    det = MODELS.build(dict(type="StubDet"))
    load_checkpoint(det, str(tmp_path / "student.pth"), map_location="cpu", revise_keys=REVISE_KEYS)
    assert det.w.item() == 5.0
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}}, tmp_path / "ddp.pth")
    det = MODELS.build(dict(type="StubDet"))
    load_checkpoint(det, str(tmp_path / "ddp.pth"), map_location="cpu", revise_keys=REVISE_KEYS)
    assert det.w.item() == 5.0


def test_drop_empty_branches_preprocessor():
    from mmdet.models.data_preprocessors import MultiBranchDataPreprocessor

    def data():
        # a collated batch of two labeled images: the pseudo branch is None everywhere
        return {
            "inputs": {"human": [torch.full((3, 4, 4), 2.0), torch.full((3, 4, 4), 2.0)], "pseudo": [None, None]},
            "data_samples": {"human": [DetDataSample(), DetDataSample()], "pseudo": [None, None]},
        }

    inner = dict(type="DetDataPreprocessor")
    stock = MultiBranchDataPreprocessor(inner)
    with pytest.raises(AssertionError, match="empty list"):
        stock(data(), True)

    # the default preprocessor, derived from the detector config
    model = LossNormalizedDetector(detector=dict(type="StubDet", data_preprocessor=inner), ema_decay=0.5)
    assert isinstance(model.data_preprocessor, DropEmptyBranchesDataPreprocessor)
    batch = model.data_preprocessor(data(), True)
    assert set(batch["inputs"]) == {"human"}
    out = model(**batch, mode="loss")
    assert out["loss"].item() == 2.0  # pseudo absent: L = Lh
    # non-training data pass straight to the inner preprocessor
    plain = model.data_preprocessor({"inputs": [torch.zeros(3, 4, 4)], "data_samples": [DetDataSample()]}, False)
    assert plain["inputs"].shape == (1, 3, 4, 4)


# --------------------------------------------------------------------------- 4. real RetinaNet smoke test


def _tiny_retinanet():
    return dict(
        type="RetinaNet",
        data_preprocessor=dict(
            type="DetDataPreprocessor",
            mean=[123.675, 116.28, 103.53],
            std=[58.395, 57.12, 57.375],
            bgr_to_rgb=True,
            pad_size_divisor=32,
        ),
        backbone=dict(type="MobileNetV2", out_indices=(2, 4), widen_factor=0.25),
        neck=dict(
            type="FPN", in_channels=[8, 24], out_channels=16, start_level=0, add_extra_convs="on_input", num_outs=2
        ),
        bbox_head=dict(
            type="RetinaHead",
            num_classes=3,
            in_channels=16,
            stacked_convs=1,
            feat_channels=16,
            anchor_generator=dict(
                type="AnchorGenerator", octave_base_scale=4, scales_per_octave=1, ratios=[1.0], strides=[8, 16]
            ),
            bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4, target_stds=[1.0] * 4),
            loss_cls=dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
            loss_bbox=dict(type="L1Loss", loss_weight=1.0),
        ),
        train_cfg=dict(
            assigner=dict(type="MaxIoUAssigner", pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0, ignore_iof_thr=-1),
            sampler=dict(type="PseudoSampler"),
            allowed_border=-1,
            pos_weight=-1,
            debug=False,
        ),
        test_cfg=dict(
            nms_pre=100, min_bbox_size=0, score_thr=0.0, nms=dict(type="nms", iou_threshold=0.5), max_per_img=5
        ),
    )


def _sample(boxes, labels):
    s = DetDataSample(metainfo=dict(img_shape=(64, 64), ori_shape=(64, 64), scale_factor=(1.0, 1.0)))
    s.gt_instances = InstanceData(
        bboxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), labels=torch.tensor(labels, dtype=torch.long)
    )
    return s


def test_retinanet_smoke(tmp_path):
    from mmengine.config import ConfigDict
    from mmengine.optim import OptimWrapper

    torch.manual_seed(0)
    det = ConfigDict(_tiny_retinanet())
    model = LossNormalizedDetector(
        detector=det,
        alpha=1.0,
        data_preprocessor=dict(type="MultiBranchDataPreprocessor", data_preprocessor=det["data_preprocessor"]),
    )
    img = lambda: torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)  # noqa: E731
    # a collated mixed batch: images 0, 1 labeled, 2, 3 pseudo-labeled (one without boxes)
    data = {
        "inputs": {"human": [img(), img(), None, None], "pseudo": [None, None, img(), img()]},
        "data_samples": {
            "human": [_sample([[8, 8, 40, 40]], [1]), _sample([[0, 0, 30, 50], [20, 20, 60, 60]], [0, 2]), None, None],
            "pseudo": [None, None, _sample([[10, 12, 50, 44]], [2]), _sample([], [])],
        },
    }
    model.train()
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01))
    before = model.detector.bbox_head.retina_cls.weight.detach().clone()
    log_vars = model.train_step(data, optim)
    assert math.isfinite(log_vars["loss"].item())
    assert log_vars["human_total"].item() > 0 and log_vars["pseudo_total"].item() > 0
    # first step: EMAs = the totals, so L = 1/2 * (Lh + Lh/Lp * Lp) = Lh
    assert model.ema_steps.item() == 1
    assert model.ema_human.item() == pytest.approx(log_vars["human_total"].item(), rel=1e-5)
    assert log_vars["loss"].item() == pytest.approx(log_vars["human_total"].item(), rel=1e-5)
    assert not torch.equal(before, model.detector.bbox_head.retina_cls.weight)

    # val/test data are not multi-branch: predict delegates to the detector
    model.eval()
    with torch.no_grad():
        preds = model.test_step({"inputs": [img()], "data_samples": [_sample([], [])]})
    assert len(preds) == 1 and "bboxes" in preds[0].pred_instances
    assert preds[0].pred_instances.bboxes.shape[1] == 4

    # student -> plain teacher checkpoint -> next student (mmengine load_from), all strict
    from mmengine.runner import load_checkpoint

    torch.save({"state_dict": model.state_dict()}, tmp_path / "student.pth")
    teacher = MODELS.build(det)
    load_checkpoint(teacher, str(tmp_path / "student.pth"), map_location="cpu", revise_keys=REVISE_KEYS)
    torch.save({"state_dict": teacher.state_dict()}, tmp_path / "teacher.pth")
    student = LossNormalizedDetector(detector=det)
    load_checkpoint(student, str(tmp_path / "teacher.pth"), map_location="cpu", strict=True)
    for key, value in model.detector.state_dict().items():
        assert torch.equal(student.detector.state_dict()[key], value), key
    assert student.ema_steps.item() == 0 and math.isnan(student.ema_pseudo.item())
