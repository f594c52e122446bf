"""ST / ST++ strong augmentation as a choice of files (``strong_aug``): the reference's by
default, without its hue jitter, or none; each a separate key (docs/design.md §3.4)."""

import json

import numpy as np
import pytest

from selftrain.mm.configs import (
    ConfigError,
    SegSource,
    load_config,
    recipe_digest,
    seg_train_config,
    strong_names,
    strong_transforms,
    training_stage,
)


def test_the_shipped_strong_augmentations_and_none():
    assert strong_names() == ["strong", "strong_no_hue", "none"]
    assert strong_transforms("seg", "none") == [] and strong_transforms("det", "none") == []
    for task in ("det", "seg"):
        reference, no_hue = strong_transforms(task), strong_transforms(task, "strong_no_hue")
        # strong_no_hue is the reference's strong augmentation with the hue jitter at 0, nothing else
        assert reference[0] == dict(
            type="ColorJitter", brightness=0.5, contrast=0.5, saturation=0.5, hue=0.25, prob=0.8
        )
        assert no_hue[0] == dict(reference[0], hue=0.0)
        assert no_hue[1:] == reference[1:]


@pytest.mark.parametrize("name", ["s1", "weak", "strongest", "../aug/strong", "/tmp/strong", ""])
def test_an_unknown_strong_augmentation_is_refused_naming_the_choices(name):
    with pytest.raises(
        ConfigError, match=r"unknown strong augmentation .*'strong', 'strong_no_hue', 'none'\]: the name \(not a path\)"
    ):
        strong_transforms("seg", name)
    if name not in ("s1", "weak"):  # augmentation presets, for a recipe
        with pytest.raises(ConfigError):
            recipe_digest((training_stage("seg", "st"),), ("weak", name or "strong?"))


def test_each_strong_augmentation_is_its_own_recipe():
    stage = (training_stage("seg", "st"),)
    digests = {name: recipe_digest(stage, ("weak", name) if name != "none" else ("weak",)) for name in strong_names()}
    assert len(set(digests.values())) == 3


def _st_student(tmp_path, strong_aug):
    lab, pseudo = tmp_path / "lab.json", tmp_path / "pseudo.json"
    lab.write_text(json.dumps([{"img_path": f"{i}.jpg", "seg_map_path": f"{i}.png"} for i in range(4)]))
    pseudo.write_text(json.dumps([{"img_path": f"u{i}.jpg", "seg_map_path": f"u{i}.png"} for i in range(8)]))
    classes = ("background", "a")
    cfg = seg_train_config(
        load_config("seg/deeplabv3plus_mnv2_128_cpu", "seg"),
        work_dir=str(tmp_path),
        labeled=SegSource(str(lab), classes),
        val=None,
        iters=30,
        k=3,
        seed=0,
        pretrained=False,
        pseudo=SegSource(str(pseudo), classes),
        num_pseudo=8,
        strong_aug=strong_aug,
    )
    labeled_ds, pseudo_ds = cfg.train_dataloader.dataset.datasets
    return [t["type"] for t in labeled_ds.dataset.pipeline], pseudo_ds.pipeline


def test_the_pseudo_labeled_images_get_the_chosen_strong_augmentation(tmp_path):
    weak, none = _st_student(tmp_path, "none")
    assert [t["type"] for t in none] == weak  # 'none': the weak augmentation only, as the labeled images
    weak, no_hue = _st_student(tmp_path, "strong_no_hue")
    assert [t["type"] for t in no_hue] == weak[:-1] + [
        "ColorJitter",
        "RandomGrayscale",
        "GaussianBlur",
        "RandomFillCutOut",
        weak[-1],
    ]
    assert next(t for t in no_hue if t["type"] == "ColorJitter")["hue"] == 0.0


def test_color_jitter_without_hue_leaves_the_hue_alone():
    """hue 0: no HSV round trip (it moves pixel values by up to a few levels), as torchvision skips it."""
    from selftrain.mm.transforms import ColorJitter

    img = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    same = ColorJitter(brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0, prob=1.0)
    assert np.array_equal(same.transform({"img": img.copy()})["img"], img)
    np.random.seed(0)
    shifted = ColorJitter(brightness=0.0, contrast=0.0, saturation=0.0, hue=0.25, prob=1.0)
    assert not np.array_equal(shifted.transform({"img": img.copy()})["img"], img)


def test_a_run_takes_the_reference_strong_augmentation_by_default_and_checks_another():
    from deploy.deployments import demo_parameters
    from flows.params import SelfTrainingParams

    seg = dict(img_dir="/d/img", ann_dir="/d/ann", classes=["background", "thing"])

    def params(**extra):
        extra.setdefault("method", ["st", "st++"])
        return SelfTrainingParams(dataset="s", task="segmentation", labeled=seg, val=seg, unlabeled="/d/u", **extra)

    assert params().strong_aug == "strong"  # the papers' recipe
    assert params(strong_aug="strong_no_hue").strong_aug == "strong_no_hue"
    assert params(strong_aug="none", method="st").strong_aug == "none"
    with pytest.raises(ValueError, match=r"strong_aug: unknown strong augmentation 'strongest'; use one of"):
        params(strong_aug="strongest")
    with pytest.raises(
        ValueError, match=r"strong_aug 'none' applies to st / st\+\+ students only; methods: \['zoph'\]"
    ):
        params(strong_aug="none", method="zoph")
    detection = SelfTrainingParams(**dict(demo_parameters(), method=["st"], strong_aug="strong_no_hue"))
    assert detection.strong_aug == "strong_no_hue"


def test_a_users_strong_file_is_checked_before_any_work(tmp_path, monkeypatch):
    """A file of the user's own is found by its name; a broken one is named, a misspelt
    transform is found when the run's parameters are checked, not when the student trains."""
    import shutil

    from flows.params import SelfTrainingParams
    from selftrain.mm.configs import files

    copy = tmp_path / "model_configs"
    shutil.copytree(files.MODEL_CONFIGS, copy)
    monkeypatch.setattr(files, "MODEL_CONFIGS", str(copy))
    (copy / "aug" / "strong_blur.py").write_text(
        "seg = [dict(type='GaussianBlur', sigma_range=(1.0, 2.0), prob=1.0)]\n"
    )
    (copy / "aug" / "strong_typo.py").write_text("seg = [dict(type='GaussianBlurr')]\n")
    (copy / "aug" / "strong_broken.py").write_text("seg = [dict(type='GaussianBlur'\n")
    (copy / "aug" / "strong_dict.py").write_text("seg = dict(type='GaussianBlur')\n")
    seg = dict(img_dir="/d/img", ann_dir="/d/ann", classes=["background", "thing"])

    def params(strong_aug):
        return SelfTrainingParams(
            dataset="s", task="segmentation", labeled=seg, val=seg, unlabeled="/d/u", method="st", strong_aug=strong_aug
        )

    assert "strong_blur" in strong_names()
    assert params("strong_blur").strong_aug == "strong_blur"
    assert strong_transforms("seg", "strong_blur") == [dict(type="GaussianBlur", sigma_range=(1.0, 2.0), prob=1.0)]
    with pytest.raises(ValueError, match=r"GaussianBlurr.*cannot be built: KeyError"):
        params("strong_typo")
    with pytest.raises(ValueError, match=r"cannot load strong augmentation .*strong_broken\.py: SyntaxError"):
        params("strong_broken")
    with pytest.raises(ValueError, match=r"strong_dict\.py: 'seg' must be a list of transform dicts"):
        params("strong_dict")
    with pytest.raises(ValueError, match=r"strong_blur\.py has no 'det' transform list"):
        strong_transforms("det", "strong_blur")


@pytest.mark.parametrize(
    "role, method, pseudo, named",
    [("teacher", "zoph", False, "a teacher (no pseudo labels)"), ("student", "zoph", True, "a zoph student")],
)
def test_train_model_refuses_a_strong_augmentation_it_would_ignore(tmp_path, role, method, pseudo, named):
    # teachers and Zoph et al.'s students have no strong augmentation of pseudo-labeled images:
    # a non-default choice given to them directly is refused before any work, not dropped
    from storage.store import ArtifactRef
    from tasks.train_model import train_model

    def ref(stage: str) -> ArtifactRef:
        return ArtifactRef(root=str(tmp_path), dataset="demo", stage=stage, key="0" * 32)

    with pytest.raises(ValueError) as info:
        train_model.fn(
            str(tmp_path),
            "seg/fcn_tiny_cpu",
            ref("seg_dataset"),
            None,
            role=role,
            iters=3,
            k=3,
            seed=0,
            pseudo=[ref("pseudo_masks")] if pseudo else None,
            method=method,
            thresholds=ref("thresholds") if pseudo else None,
            strong_aug="strong_no_hue",
        )
    assert str(info.value) == (
        "train_model: strong_aug='strong_no_hue' applies to st / st++ students only (pseudo labels, method 'st'), "
        f"not to {named}: it would be ignored"
    )
    assert list(tmp_path.iterdir()) == []  # nothing stored
