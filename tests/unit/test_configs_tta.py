"""The config builder and TTA merging (mmdet's DetTTAModel on hand-made predictions)."""

import pytest
import torch

from selftrain.mm.configs import CocoSource, ConfigError, det_train_config, det_tta_model, det_tta_pipeline, load_config

SRC = CocoSource(ann_file="/d/l.json", image_root="/d/images", classes=("tree",))


@pytest.fixture(scope="module")
def cfg():
    return load_config("det/retinanet_mnv2_256_cpu")


def test_missing_config_lists_the_available_ones():
    with pytest.raises(ConfigError, match=r"model config 'nope' not found; available det configs: \[.*retinanet"):
        load_config("nope")


def test_teacher_keeps_k_evenly_spaced_checkpoints(cfg):
    c = det_train_config(cfg, work_dir="/w", labeled=SRC, val=SRC, iters=300, k=3, seed=1, pretrained=False)
    assert c.default_hooks.checkpoint.interval == 100 and c.default_hooks.checkpoint.max_keep_ckpts == -1
    assert c.default_hooks.checkpoint.save_best == "coco/bbox_mAP"
    assert c.train_cfg.max_iters == 300 and c.train_cfg.val_interval == 100
    assert c.train_dataloader.sampler.type == "InfiniteSampler"
    assert c.randomness.seed == 1
    with pytest.raises(ConfigError, match=r"iters \(100\) must be a positive multiple of k \(3\)"):
        det_train_config(cfg, work_dir="/w", labeled=SRC, val=None, iters=100, k=3, seed=0)


def test_student_batches_are_half_human_half_pseudo_with_loss_normalisation(cfg):
    c = det_train_config(
        cfg,
        work_dir="/w",
        labeled=SRC,
        val=None,
        iters=30,
        k=3,
        seed=0,
        aug="S4",
        load_from="/t.pth",
        pseudo=SRC,
        alpha=2.0,
    )
    assert c.model.type == "LossNormalizedDetector" and c.model.alpha == 2.0
    # Zoph et al. §3.2: the supervised batch of human images plus as many pseudo-labeled ones
    b = cfg.batch_size
    assert c.train_dataloader.batch_size == 2 * b
    assert c.train_dataloader.sampler == dict(
        type="MultiSourceSampler", batch_size=2 * b, source_ratio=[1, 1], shuffle=True
    )
    human, pseudo = c.train_dataloader.dataset.datasets
    assert human.pipeline[-1].type == "MultiBranch" and "human" in human.pipeline[-1]
    assert "pseudo" in pseudo.pipeline[-1] and "human" not in pseudo.pipeline[-1]
    assert human.pipeline[2].type == "RandAugment"  # S4
    assert c.load_from == "/t.pth"
    # the documented option: the teacher's batch, half of each (the sampler draws b/2 + b/2)
    split = det_train_config(
        cfg, work_dir="/w", labeled=SRC, val=None, iters=30, k=3, seed=0, pseudo=SRC, zoph_batch="split"
    )
    assert split.train_dataloader.batch_size == split.train_dataloader.sampler.batch_size == b
    with pytest.raises(ConfigError, match="zoph_batch"):
        det_train_config(cfg, work_dir="/w", labeled=SRC, val=None, iters=30, k=3, seed=0, pseudo=SRC, zoph_batch="x")
    # the loss is normalised unless the ablation asks for the plain weighted loss
    assert c.model.get("normalize", True) is True
    plain = det_train_config(
        cfg, work_dir="/w", labeled=SRC, val=None, iters=30, k=3, seed=0, pseudo=SRC, alpha=4.0, normalize_loss=False
    )
    assert plain.model.normalize is False and plain.model.alpha == 4.0


def test_a_mixed_batch_holds_as_many_human_images_as_the_teachers_batch():
    """mmdet's MultiSourceSampler with source_ratio [1, 1] and batch 2b yields b indices from
    each source per batch: b human images, as the teacher's whole batch."""
    from mmdet.datasets.samplers import MultiSourceSampler

    class Concat:  # what the sampler reads of a ConcatDataset: its sources and their offsets
        datasets = [range(12), range(78)]
        cumulative_sizes = [12, 90]

        def __len__(self):
            return 90

    sampler = MultiSourceSampler(Concat(), batch_size=8, source_ratio=[1, 1], shuffle=True, seed=0)
    it = iter(sampler)
    for _ in range(5):
        batch = [next(it) for _ in range(8)]
        assert sum(i < 12 for i in batch) == 4 and sum(i >= 12 for i in batch) == 4


@pytest.mark.parametrize(
    "preset,policy,jitter",
    [
        ("S1", None, (0.8, 1.2)),
        ("S2", "AutoAugment", (0.8, 1.2)),
        ("S3", "AutoAugment", (0.5, 2.0)),
        ("S4", "RandAugment", (0.5, 2.0)),
    ],
)
def test_augmentation_presets(cfg, preset, policy, jitter):
    c = det_train_config(cfg, work_dir="/w", labeled=SRC, val=None, iters=3, k=3, seed=0, aug=preset, pretrained=False)
    types = [t["type"] for t in c.train_dataloader.dataset.pipeline]
    assert (policy in types) if policy else not {"AutoAugment", "RandAugment"} & set(types)
    resize = next(t for t in c.train_dataloader.dataset.pipeline if t["type"] == "RandomResize")
    assert tuple(resize["ratio_range"]) == jitter
    with pytest.raises(ConfigError, match="unknown augmentation preset"):
        det_train_config(cfg, work_dir="/w", labeled=SRC, val=None, iters=3, k=3, seed=0, aug="S9")


def test_tta_pipeline_has_every_scale_and_flip(cfg):
    tta = det_tta_pipeline(cfg, [0.5, 1.0], flip=True)[1]["transforms"]
    assert [t["scale"] for t in tta[0]] == [(128, 128), (256, 256)]
    assert [t["prob"] for t in tta[1]] == [1.0, 0.0]
    with pytest.raises(ConfigError, match="TTA scales"):
        det_tta_pipeline(cfg, [], flip=False)


def test_tta_merge_maps_flipped_boxes_back_and_suppresses_duplicates(cfg):
    """Two views of a 100x80 image: as is, and flipped. The same tree seen in both views is
    one box after merging (NMS keeps the higher score); the flipped view's box is mirrored
    back to original coordinates first."""
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmengine.config import ConfigDict
    from mmengine.registry import init_default_scope
    from mmengine.structures import InstanceData

    import selftrain.mm  # noqa: F401

    init_default_scope("mmdet")
    tta = MODELS.build(ConfigDict(det_tta_model(cfg, merge_iou=0.5, max_per_img=10)))

    def view(boxes, scores, flip):
        s = DetDataSample(
            metainfo=dict(
                ori_shape=(80, 100),
                img_shape=(80, 100),
                scale_factor=(1.0, 1.0),
                flip=flip,
                flip_direction="horizontal" if flip else None,
            )
        )
        s.pred_instances = InstanceData(
            bboxes=torch.tensor(boxes, dtype=torch.float),
            scores=torch.tensor(scores),
            labels=torch.zeros(len(scores), dtype=torch.long),
        )
        return s

    plain = view([[10, 10, 30, 30], [60, 40, 90, 70]], [0.9, 0.3], flip=False)
    flipped = view([[70, 10, 90, 30]], [0.7], flip=True)  # mirror of [10, 10, 30, 30] in a 100-px-wide image
    merged = tta.merge_preds([[plain, flipped]])[0].pred_instances
    got = sorted(zip(merged.scores.tolist(), merged.bboxes.tolist()), reverse=True)
    assert [round(s, 2) for s, _ in got] == [0.9, 0.3]
    assert got[0][1] == [10, 10, 30, 30] and got[1][1] == [60, 40, 90, 70]


def test_the_real_coco_config_builds_offline():
    """RetinaNet R50-FPN 640 px for COCO builds (weights are only fetched at init_weights)."""
    from mmdet.registry import MODELS
    from mmengine.config import ConfigDict
    from mmengine.registry import init_default_scope

    init_default_scope("mmdet")
    coco = load_config("det/retinanet_r50_fpn_640_coco")
    assert tuple(coco.img_scale) == (640, 640) and coco.model.bbox_head.num_classes == 80
    model = MODELS.build(ConfigDict(det_tta_model(coco)))
    assert type(model.module).__name__ == "RetinaNet" and model.tta_cfg.max_per_img == 300
