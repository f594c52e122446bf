"""The composed real-photo segmentation benchmark: small real builds from the cached Debian photos
(deploy/setup.sh runs ``python -m selftrain.datasets.composed_seg fetch``; fetch_sources() below
downloads them once if they are missing, which is why these are not unit tests)."""

from __future__ import annotations

import json
import os
import subprocess
import time

import numpy as np
import pytest
from PIL import Image

from selftrain.datasets import composed_seg as cs

SMALL = {"size": 64, "num_labeled": 3, "num_unlabeled": 4, "num_val": 3}
N_CLASSES = len(cs.CLASSES) - 1

# ---------------------------------------------------------------------------------------------------------
# Real builds
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sources():
    return cs.fetch_sources()


@pytest.fixture(scope="module")
def small(sources, tmp_path_factory):
    out = tmp_path_factory.mktemp("seg") / "a"
    return cs.prepare(str(out), **SMALL)


def _files(root):
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


def test_fetch_sources_second_call_is_fast_and_offline(sources, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError(f"fetch_sources ran a command although the sources are cached: {args}")

    monkeypatch.setattr(subprocess, "run", no_network)
    monkeypatch.setattr(subprocess, "Popen", no_network)
    t0 = time.perf_counter()
    again = cs.fetch_sources()
    assert time.perf_counter() - t0 < 1.0
    assert again == sources
    assert sources.backgrounds == tuple(sorted(sources.backgrounds)) and len(sources.backgrounds) == 18
    for cls in cs.CLASSES[1:]:
        names = sources.cutouts[cls]
        assert names == tuple(sorted(names)) and len(names) >= cs.MIN_CUTOUTS_PER_CLASS
        assert all(os.path.isfile(sources.path(n)) for n in names)
    assert not any(n.endswith("albino_peahen.png") for n in sources.cutouts["bird"])


def test_small_split_layout_and_masks(small):
    assert small.classes == ("background", "bird", "flower", "fruit")
    assert len(small.palette) == len(small.classes)
    info = json.loads(open(os.path.join(small.root, "split.json")).read())
    assert info["classes"] == list(small.classes)
    for split, n in (("labeled", 3), ("unlabeled", 4), ("val", 3)):
        img_dir, ann_dir = getattr(small, f"{split}_img_dir"), getattr(small, f"{split}_ann_dir")
        stems = sorted(os.listdir(img_dir))
        assert stems == sorted(os.listdir(ann_dir)) == [f"{split}_{i:05d}.png" for i in range(n)]
        assert info["counts"][split]["images"] == n
        present = set()
        for name in stems:
            with Image.open(os.path.join(img_dir, name)) as im:
                assert im.mode == "RGB" and im.size == (64, 64)
            with Image.open(os.path.join(ann_dir, name)) as im:
                assert im.mode == "L" and im.size == (64, 64)
                mask = np.asarray(im)
            assert mask.dtype == np.uint8 and mask.max() <= N_CLASSES
            present |= set(np.unique(mask).tolist())
        if split != "unlabeled":
            # primary class cycles 1, 2, 3 and is pasted last, fully inside: every class is there
            assert present >= set(range(1, N_CLASSES + 1)), (split, present)


def test_train_and_val_sources_are_disjoint(small, sources):
    chosen = json.loads(open(os.path.join(small.root, "split.json")).read())["sources"]
    assert chosen == cs.source_split(sources)
    train, val = chosen["train"], chosen["val"]
    assert not set(train["backgrounds"]) & set(val["backgrounds"])
    assert sorted(train["backgrounds"] + val["backgrounds"]) == list(sources.backgrounds)
    assert len(val["backgrounds"]) == round(0.3 * len(sources.backgrounds)) == 5
    for cls in cs.CLASSES[1:]:
        assert not set(train["cutouts"][cls]) & set(val["cutouts"][cls])
        assert sorted(train["cutouts"][cls] + val["cutouts"][cls]) == list(sources.cutouts[cls])
        assert len(val["cutouts"][cls]) >= 2 and len(train["cutouts"][cls]) >= 5


def test_deterministic_and_seed_dependent(small, tmp_path):
    same = cs.prepare(str(tmp_path / "b"), **SMALL)
    assert _files(same.root) == _files(small.root)  # byte-identical, split.json included
    other = cs.prepare(str(tmp_path / "c"), **{**SMALL, "seed": 1})
    a, c = _files(small.root), _files(other.root)
    assert a.keys() == c.keys()
    assert sum(a[k] != c[k] for k in a if k.endswith(".png")) >= len(a) - 2
    # an image depends only on (seed, split, index): fewer unlabeled images leave the others unchanged
    fewer = _files(cs.prepare(str(tmp_path / "d"), **{**SMALL, "num_unlabeled": 2}).root)
    for k, v in fewer.items():
        if k.endswith(".png"):
            assert a[k] == v, k


def test_second_prepare_is_fast_and_returns_same_paths(small):
    before = os.stat(os.path.join(small.root, "split.json")).st_mtime_ns
    t0 = time.perf_counter()
    again = cs.prepare(small.root, **SMALL)
    assert time.perf_counter() - t0 < 1.0
    assert again == small
    assert os.stat(os.path.join(small.root, "split.json")).st_mtime_ns == before


def test_bad_arguments(tmp_path, sources):
    with pytest.raises(ValueError, match="size"):
        cs.prepare(str(tmp_path / "x"), size=0)
    with pytest.raises(ValueError, match="size"):
        cs.prepare(str(tmp_path / "x"), size=-64)
    with pytest.raises(ValueError, match="number of classes"):
        cs.prepare(str(tmp_path / "x"), num_labeled=N_CLASSES - 1)
    with pytest.raises(ValueError, match="number of classes"):
        cs.prepare(str(tmp_path / "x"), num_val=0)
    with pytest.raises(ValueError, match="objects_per_image"):
        cs.prepare(str(tmp_path / "x"), objects_per_image=(3, 1))
    with pytest.raises(FileNotFoundError, match="composed_seg fetch"):
        cs.prepare(str(tmp_path / "x"), **SMALL, cache_dir=str(tmp_path / "empty-cache"))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("not ours")
    with pytest.raises(FileExistsError):
        cs.prepare(str(foreign), **SMALL)
    assert not (tmp_path / "x").exists()
