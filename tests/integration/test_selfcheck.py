"""The stack self-check, in a fresh interpreter as a user runs it (start-up hook included)."""

import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_selfcheck_passes_in_a_fresh_process():
    out = subprocess.run([sys.executable, "-m", "selftrain.selfcheck"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    for line in (
        "[ok] imports and versions",
        "[ok] mmcv.ops.nms == torchvision.ops.nms",
        "[ok] mmengine collect_env",
        "[ok] mmengine checkpoint round trip",
        "self-check passed",
    ):
        assert line in out.stdout


def test_torchvision_imports_in_a_fresh_process():
    code = (
        "import torch, torchvision.ops as o; "
        "print(o.nms(torch.tensor([[0., 0, 10, 10], [1, 1, 10, 10]]), torch.tensor([.9, .8]), .5).tolist())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[0]"
