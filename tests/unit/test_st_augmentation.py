"""ST / ST++ training configs and transforms: strong augmentation only on pseudo images, the
labeled set oversampled, the segmentation TTA confidence rule (docs/design.md §3.2, §3.4, §3.5)."""

import json

import numpy as np
import pytest
import torch

from selftrain.mm.configs import (
    CocoSource,
    SegSource,
    det_train_config,
    load_config,
    oversample_times,
    seg_train_config,
)

STRONG = {"ColorJitter", "RandomGrayscale", "GaussianBlur"}


def _types(pipeline):
    out = []
    for t in pipeline:
        out.append(t["type"])
        out += _types(t.get("transforms", []))
    return out


@pytest.fixture
def seg_sources(tmp_path):
    lab = tmp_path / "lab.json"
    lab.write_text(json.dumps([{"img_path": f"{i}.jpg", "seg_map_path": f"{i}.png"} for i in range(4)]))
    pseudo = tmp_path / "pseudo.json"
    pseudo.write_text(json.dumps([{"img_path": f"u{i}.jpg", "seg_map_path": f"u{i}.png"} for i in range(10)]))
    classes = ("background", "a", "b")
    return SegSource(str(lab), classes), SegSource(str(pseudo), classes)


def test_labeled_set_is_oversampled_to_the_pseudo_set_size():
    assert oversample_times(4, 10) == 3  # ceil(2.5) = 3, as the ST++ reference: 12 labeled next to 10 pseudo
    assert oversample_times(12, 78) == 7  # ceil(6.5)
    assert oversample_times(16, 96) == 6  # exact
    assert oversample_times(20, 5) == 1  # never dropped below once


def test_seg_st_strong_augmentation_only_on_pseudo_images(seg_sources, tmp_path):
    lab, pseudo = seg_sources
    cfg = seg_train_config(
        load_config("seg/deeplabv3plus_mnv2_128_cpu", "seg"),
        work_dir=str(tmp_path),
        labeled=lab,
        val=None,
        iters=30,
        k=3,
        seed=0,
        pretrained=False,
        pseudo=pseudo,
        num_pseudo=10,
    )
    labeled_ds, pseudo_ds = cfg.train_dataloader.dataset.datasets
    assert labeled_ds.type == "RepeatDataset" and labeled_ds.times == 3
    weak = _types(labeled_ds.dataset.pipeline)
    strong = _types(pseudo_ds.pipeline)
    assert not (STRONG | {"RandomFillCutOut"}) & set(weak)
    assert STRONG | {"RandomFillCutOut"} <= set(strong)
    # weak augmentation on both: flip, resize with ratio 0.5..2.0, crop; strong after the weak part
    for p in (labeled_ds.dataset.pipeline, pseudo_ds.pipeline):
        resize = next(t for t in p if t["type"] == "RandomResize")
        assert tuple(resize["ratio_range"]) == (0.5, 2.0)
        assert {"RandomCrop", "RandomFlip"} <= set(_types(p))
    assert strong.index("ColorJitter") > strong.index("RandomFlip")
    cutout = next(t for t in pseudo_ds.pipeline if t["type"] == "RandomFillCutOut")
    assert cutout["prob"] == 0.5 and cutout["seg_fill"] == 255  # cut pixels are ignored in the loss
    jitter = next(t for t in pseudo_ds.pipeline if t["type"] == "ColorJitter")
    assert jitter["prob"] == 0.8
    assert next(t for t in pseudo_ds.pipeline if t["type"] == "RandomGrayscale")["prob"] == 0.2
    assert next(t for t in pseudo_ds.pipeline if t["type"] == "GaussianBlur")["prob"] == 0.5
    # the student is re-initialised: no teacher checkpoint
    assert cfg.load_from is None


def test_seg_st_datasets_build_with_openmmlab(seg_sources, tmp_path):
    """The config builds into real mmseg datasets whose pipelines differ as configured."""
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS

    import selftrain.mm  # noqa: F401

    lab, pseudo = seg_sources
    cfg = seg_train_config(
        load_config("seg/deeplabv3plus_mnv2_128_cpu", "seg"),
        work_dir=str(tmp_path),
        labeled=lab,
        val=None,
        iters=30,
        k=3,
        seed=0,
        pretrained=False,
        pseudo=pseudo,
        num_pseudo=10,
    )
    init_default_scope("mmseg")
    ds = DATASETS.build(cfg.train_dataloader.dataset)
    assert len(ds) == 4 * 3 + 10  # the labeled set ceil(10 / 4) = 3 times
    names = lambda d: [type(t).__name__ for t in d.pipeline.transforms]  # noqa: E731
    assert "ColorJitter" not in names(ds.datasets[0].dataset)
    assert {"ColorJitter", "RandomGrayscale", "GaussianBlur", "RandomFillCutOut"} <= set(names(ds.datasets[1]))


def test_det_st_student_is_a_plain_detector_with_strong_pseudo_pipeline(tmp_path):
    coco = {
        "images": [{"id": i, "file_name": f"{i}.png", "width": 64, "height": 64} for i in range(3)],
        "annotations": [],
        "categories": [{"id": 1, "name": "tree"}],
    }
    (tmp_path / "l.json").write_text(json.dumps(coco))
    lab = CocoSource(str(tmp_path / "l.json"), "/x", ("tree",))
    pseudo = CocoSource(str(tmp_path / "p.json"), "", ("tree",))
    cfg = det_train_config(
        load_config("det/retinanet_mnv2_256_cpu"),
        work_dir=str(tmp_path),
        labeled=lab,
        val=None,
        iters=30,
        k=3,
        seed=0,
        pretrained=False,
        pseudo=pseudo,
        method="st",
        num_pseudo=12,
    )
    assert cfg.model.type == "RetinaNet"  # no loss normalisation, no teacher weights
    labeled_ds, pseudo_ds = cfg.train_dataloader.dataset.datasets
    assert labeled_ds.times == 4  # ceil(12 / 3)
    assert not STRONG & set(_types(labeled_ds.dataset.pipeline))
    strong = _types(pseudo_ds.pipeline)
    assert STRONG | {"RandomFillCutOut"} <= set(strong)
    resize = next(t for t in pseudo_ds.pipeline if t["type"] == "RandomResize")
    assert tuple(resize["ratio_range"]) == (0.5, 2.0)
    with pytest.raises(ValueError, match="unknown student method"):
        det_train_config(
            load_config("det/retinanet_mnv2_256_cpu"),
            work_dir=str(tmp_path),
            labeled=lab,
            val=None,
            iters=30,
            k=3,
            seed=0,
            pseudo=pseudo,
            method="bogus",
        )


def test_color_jitter_and_blur_probabilities_and_hue_rotation():
    from selftrain.mm.transforms import ColorJitter, GaussianBlur, shift_hue

    img = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    assert np.array_equal(ColorJitter(prob=0.0).transform({"img": img.copy()})["img"], img)
    assert np.array_equal(GaussianBlur(prob=0.0).transform({"img": img.copy()})["img"], img)
    assert not np.array_equal(GaussianBlur(sigma_range=(2.0, 2.0), prob=1.0).transform({"img": img.copy()})["img"], img)
    out = ColorJitter(prob=1.0).transform({"img": img.copy()})["img"]
    assert out.shape == img.shape and out.dtype == np.uint8
    red = np.zeros((2, 2, 3), np.uint8)
    red[..., 2] = 255  # BGR
    assert shift_hue(red, 1 / 3)[0, 0].tolist() == [0, 255, 0]  # red + 120 degrees = green
    assert shift_hue(red, -1 / 3)[0, 0].tolist() == [255, 0, 0]  # red - 120 degrees = blue
    with pytest.raises(ValueError, match="hue"):
        ColorJitter(hue=0.7)


def test_seg_tta_merge_averages_softmax_and_ignores_unconfident_pixels():
    from mmengine.registry import init_default_scope
    from mmengine.structures import PixelData
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample

    import selftrain.mm  # noqa: F401
    from selftrain.mm.configs import seg_tta_model

    init_default_scope("mmseg")
    tta = MODELS.build(seg_tta_model(load_config("seg/deeplabv3plus_mnv2_128_cpu", "seg"), 3, 0.5))

    def view(logits):
        s = SegDataSample(metainfo={"img_path": "x"})
        s.seg_logits = PixelData(data=torch.tensor(logits, dtype=torch.float32))
        return s

    # 3 classes, 1x2 pixels, two views. Pixel 0: view 1 [2,0,0] -> softmax (0.787, 0.107, 0.107),
    # view 2 [0,0,0] -> 1/3 each; mean p0 = 0.560 >= 0.5 -> class 0.
    # Pixel 1: view 1 [0,1,0] -> (0.212, 0.576, 0.212), view 2 [0,0,1] -> (0.212, 0.212, 0.576);
    # mean max = 0.394 < 0.5 -> ignore (255).
    v1 = [[[2.0, 0.0]], [[0.0, 1.0]], [[0.0, 0.0]]]
    v2 = [[[0.0, 0.0]], [[0.0, 0.0]], [[0.0, 1.0]]]
    out = tta.merge_preds([[view(v1), view(v2)]])[0]
    assert out.pred_sem_seg.data.tolist() == [[[0, 255]]]
    e = np.exp
    p0 = (e(2) / (e(2) + 2) + 1 / 3) / 2
    p1 = (e(1) / (e(1) + 2) + 1 / (e(1) + 2)) / 2
    assert out.seg_confidence.data[0, 0].tolist() == pytest.approx([p0, p1], abs=1e-6)


def test_cutout_holes_lie_inside_are_filled_at_random_and_ignored_with_the_reference_area():
    """ST++'s cutout (reference dataset/transform.py): area U(0.02, 0.4) of the image, aspect
    U(0.3, 1/0.3), inside the image, random fill, the pseudo mask's pixels ignored."""
    from selftrain.mm.transforms import RandomFillCutOut

    np.random.seed(0)
    cut = RandomFillCutOut(prob=1.0)
    areas = []
    for _ in range(2000):
        img = np.zeros((64, 64, 3), np.uint8)
        seg = np.ones((64, 64), np.uint8)
        out = cut.transform({"img": img, "gt_seg_map": seg})
        hole = out["gt_seg_map"] == 255
        ys, xs = np.nonzero(hole)
        # one rectangle inside the image, and exactly the pixels whose image values changed
        assert hole.sum() == (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
        assert np.array_equal(hole, (out["img"] != 0).any(axis=2) | hole)
        assert (out["gt_seg_map"][~hole] == 1).all()
        areas.append(hole.mean())
    areas = np.array(areas)
    # pixel-level random fill: not one value
    assert len(np.unique(out["img"][hole])) > 10
    # the reference rule's hole sizes: 0.02 .. 0.4 of the image, mean about 0.14 once holes that
    # do not fit are drawn again (the project's former black CutOut from six fixed shapes: 0.097)
    assert areas.min() >= 0.015 and areas.max() <= 0.4
    assert 0.12 < areas.mean() < 0.16
    assert RandomFillCutOut(prob=0.0).transform({"img": img.copy()})["img"].sum() == 0


def test_grayscale_uses_luma_weights_on_bgr_images():
    """torchvision's RandomGrayscale (ST++): L = 0.299 R + 0.587 G + 0.114 B (mmcv images are BGR)."""
    from mmcv.transforms import TRANSFORMS

    from selftrain.mm.configs import strong_transforms

    spec = next(t for t in strong_transforms("seg") if t["type"] == "RandomGrayscale")
    gray = TRANSFORMS.build(dict(spec, prob=1.0))
    red = np.zeros((2, 2, 3), np.uint8)
    red[..., 2] = 200  # BGR: pure red
    out = gray.transform({"img": red})["img"]
    # 0.299 * 200 = 59.8: mmcv truncates to 59 (PIL rounds to 60); the channel mean would be 67
    assert out.shape == (2, 2, 3) and (out == 59).all()
