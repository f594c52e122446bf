"""The composed real-photo segmentation benchmark: the pasting rule by hand, and the download's
failures (no network, no photos: the builds from the real photos are in
tests/integration/test_composed_seg_builds.py)."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

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
