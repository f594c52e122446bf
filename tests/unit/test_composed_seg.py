"""The composed real-photo segmentation benchmark: the pasting rule by hand, then small real builds.

Uses the cached Debian photos (deploy/setup.sh runs ``python -m selftrain.datasets.composed_seg fetch``;
fetch_sources() below downloads them once if they are missing).
"""

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
# Pasting rule, hand-computed
# ---------------------------------------------------------------------------------------------------------


def _cutout(alpha, rgb=(200, 100, 0)):
    alpha = np.asarray(alpha, dtype=np.uint8)
    out = np.zeros((*alpha.shape, 4), dtype=np.uint8)
    out[..., :3] = rgb
    out[..., 3] = alpha
    return out


def test_paste_cutout_mask_is_alpha_above_127():
    image = np.full((4, 5, 3), 10, dtype=np.uint8)
    mask = np.zeros((4, 5), dtype=np.uint8)
    cut = _cutout([[255, 128, 127], [0, 200, 255]])
    new_image, new_mask = cs.paste_cutout(image, mask, cut, 2, 1, 1)
    assert new_mask.tolist() == [
        [0, 0, 0, 0, 0],
        [0, 2, 2, 0, 0],  # 255 and 128 are > 127; 127 is not
        [0, 0, 2, 2, 0],  # 0 is not; 200 and 255 are
        [0, 0, 0, 0, 0],
    ]
    # RGB: (fg * a + bg * (255 - a) + 127) // 255, channel 0 (fg 200, bg 10)
    assert new_image[1, 1, 0] == 200  # a = 255
    assert new_image[1, 2, 0] == (200 * 128 + 10 * 127 + 127) // 255 == 105
    assert new_image[1, 3, 0] == (200 * 127 + 10 * 128 + 127) // 255 == 105
    assert new_image[2, 1, 0] == 10  # a = 0: background unchanged
    assert new_image[0].tolist() == image[0].tolist()  # outside the cut-out: untouched
    assert mask.sum() == 0 and image[1, 1, 0] == 10  # inputs are not modified


def test_paste_cutout_later_layers_overwrite_and_clip():
    image = np.zeros((3, 3, 3), dtype=np.uint8)
    mask = np.zeros((3, 3), dtype=np.uint8)
    image, mask = cs.paste_cutout(image, mask, _cutout(np.full((2, 2), 255)), 1, 0, 0)
    # a second object, partly outside the image (top-left at (1, -1)): only its lower row is inside
    image, mask = cs.paste_cutout(image, mask, _cutout([[255, 255], [255, 40]], rgb=(9, 9, 9)), 3, 1, -1)
    # its upper row is cut off; its lower row [255, 40] lands on row 0, columns 1 and 2
    assert mask.tolist() == [
        [1, 3, 0],  # (0, 1): class 1 overwritten by 3; (0, 2): alpha 40 leaves background
        [1, 1, 0],
        [0, 0, 0],
    ]
    assert image[0, 1].tolist() == [9, 9, 9]
    # entirely outside: nothing changes
    image2, mask2 = cs.paste_cutout(image, mask, _cutout(np.full((2, 2), 255)), 2, 5, 5)
    assert (mask2 == mask).all() and (image2 == image).all()


def test_split_names_rule():
    names = [f"pkg/x/{c}.png" for c in "abcdefghij"]
    train, val = cs.split_names(names)
    assert len(val) == 3 and len(train) == 7  # round(0.3 * 10)
    assert not set(train) & set(val) and set(train) | set(val) == set(names)
    assert train == sorted(train) and val == sorted(val)
    assert cs.split_names(list(reversed(names))) == (train, val)  # order of the input does not matter
    assert len(cs.split_names(names[:2])[1]) == 1  # at least one on each side
    with pytest.raises(ValueError):
        cs.split_names(names[:1])


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


def test_download_failure_names_the_package_and_updates_lists_once(tmp_path, monkeypatch):
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        if cmd[:2] == ["apt-get", "update"]:
            return subprocess.CompletedProcess(cmd, 0, "", "")
        return subprocess.CompletedProcess(cmd, 100, "", "E: Unable to locate package no-such-pkg")

    monkeypatch.setattr(subprocess, "run", fake_run)
    with pytest.raises(RuntimeError, match="no-such-pkg"):
        cs._apt_download("no-such-pkg", str(tmp_path))
    assert calls == [
        ["apt-get", "download", "no-such-pkg"],
        ["apt-get", "update"],
        ["apt-get", "download", "no-such-pkg"],
    ]

    calls.clear()
    monkeypatch.setattr(
        subprocess,
        "run",
        lambda cmd, **kw: (
            calls.append(cmd)
            or subprocess.CompletedProcess(cmd, 100, "", "E: Could not open lock file - permission denied")
        ),
    )
    with pytest.raises(RuntimeError, match="no-such-pkg"):
        cs._apt_download("no-such-pkg", str(tmp_path))
    assert calls == [["apt-get", "download", "no-such-pkg"]]  # not a missing-lists failure: no update
