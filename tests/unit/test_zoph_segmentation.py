"""Zoph et al. (2020) for segmentation: the recipe builds from its stage config and a real mmseg
training step runs on half human / half pseudo batches with the normalised loss."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from selftrain.mm.configs import SegSource, load_config, seg_train_config


@pytest.fixture
def sets(tmp_path):
    rng = np.random.default_rng(0)

    def make(name, n, ignore):
        pairs = []
        for i in range(n):
            img, ann = tmp_path / f"{name}{i}.png", tmp_path / f"{name}{i}_m.png"
            Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(img)
            mask = np.zeros((48, 64), np.uint8)
            mask[10:30, 20:40] = 1
            if ignore:
                mask[:5] = 255  # pseudo pixels under the confidence threshold
            Image.fromarray(mask).save(ann)
            pairs.append({"img_path": str(img), "seg_map_path": str(ann)})
        (tmp_path / f"{name}.json").write_text(json.dumps(pairs))
        return SegSource(str(tmp_path / f"{name}.json"), ("background", "thing"))

    return make("lab", 3, False), make("pseudo", 5, True)


def test_zoph_segmentation_config_is_the_papers_recipe(sets, tmp_path):
    lab, pseudo = sets
    model_cfg = load_config("seg/deeplabv3plus_mnv2_128_cpu", "seg")
    cfg = seg_train_config(
        model_cfg,
        work_dir=str(tmp_path / "w"),
        labeled=lab,
        val=None,
        iters=3,
        k=3,
        seed=0,
        pretrained=False,
        pseudo=pseudo,
        num_pseudo=5,
        method="zoph",
        alpha=2.0,
        load_from="/teacher.pth",
    )
    b = model_cfg.batch_size
    assert cfg.model.type == "LossNormalizedSegmentor" and cfg.model.alpha == 2.0
    assert cfg.model.detector.type == "EncoderDecoder"
    assert cfg.train_dataloader.batch_size == 2 * b  # B human + B pseudo, as for detection
    assert cfg.train_dataloader.sampler.type == "mmdet.MultiSourceSampler"
    assert cfg.train_dataloader.sampler.source_ratio == [1, 1]
    human, pseudo_set = cfg.train_dataloader.dataset.datasets
    assert human.pipeline[-1]["type"] == "mmdet.MultiBranch" and "human" in human.pipeline[-1]
    assert "pseudo" in pseudo_set.pipeline[-1]
    assert tuple(human.pipeline[2]["ratio_range"]) == (0.8, 1.2)  # the S1 preset, not ST's weak one
    assert cfg.load_from == "/teacher.pth"


def test_a_zoph_segmentation_student_trains_on_mixed_batches(sets, tmp_path):
    from mmengine.runner import Runner

    lab, pseudo = sets
    cfg = seg_train_config(
        load_config("seg/deeplabv3plus_mnv2_128_cpu", "seg"),
        work_dir=str(tmp_path / "w"),
        labeled=lab,
        val=lab,
        iters=2,
        k=1,
        seed=0,
        pretrained=False,
        pseudo=pseudo,
        num_pseudo=5,
        method="zoph",
        zoph_batch="split",
        num_workers=0,
    )
    cfg.train_dataloader.batch_size = cfg.train_dataloader.sampler.batch_size = 4  # 2 human + 2 pseudo
    runner = Runner.from_cfg(cfg)
    runner.train()
    model = runner.model
    assert int(model.ema_steps) == 2  # both branches seen in each of the 2 steps
    assert np.isfinite(float(model.ema_human)) and np.isfinite(float(model.ema_pseudo))
    metrics = runner.val_loop.run()  # validation delegates to the segmentor
    assert 0.0 <= metrics["mIoU"] <= 100.0


@pytest.mark.parametrize("preset", ["S2", "S3", "S4"])
def test_zoph_presets_s2_to_s4_augment_segmentation_images_and_maps_alike(preset):
    """Zoph et al. use S1..S4 for segmentation too: mmdet's AutoAugment / RandAugment, scoped for
    mmseg; geometric ops move the label map with the image and fill uncovered pixels with 255."""
    from mmengine.registry import init_default_scope
    from mmseg.registry import TRANSFORMS

    import selftrain.mm  # noqa: F401
    from selftrain.mm.configs import seg_train_pipeline

    init_default_scope("mmseg")
    pipeline = seg_train_pipeline(load_config("seg/deeplabv3plus_mnv2_128_cpu", "seg"), preset)
    policy = TRANSFORMS.build(pipeline[2])
    assert type(policy).__name__ in ("AutoAugment", "RandAugment")
    rng = np.random.default_rng(0)
    changed = 0
    for _ in range(30):
        seg = np.zeros((64, 64), np.uint8)
        seg[10:40, 20:50] = 1
        img = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
        out = policy({"img": img, "gt_seg_map": seg.copy(), "img_shape": (64, 64), "seg_fields": ["gt_seg_map"]})
        assert out["img"].shape == (64, 64, 3) and set(np.unique(out["gt_seg_map"])) <= {0, 1, 255}
        changed += not np.array_equal(out["gt_seg_map"], seg)
    assert changed > 0  # some draws are geometric: the map follows the image
