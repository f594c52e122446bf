"""The wheel holds every module and config file: stage configs build from an installed copy."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_a_wheel_builds_configs_from_its_own_files(tmp_path):
    # built from a copy of the tracked files, as from a source archive: setuptools' build/
    # folder must neither land in the checkout nor feed stale files into the wheel
    source = tmp_path / "source"
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    assert not [f for f in files if f.startswith(("build/", "dist/"))], "build output is tracked"
    for name in files:
        target = source / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(os.path.join(REPO, name), target)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(source),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
        ],
        check=True,
        timeout=300,
    )
    (wheel,) = [p for p in os.listdir(tmp_path) if p.endswith(".whl")]
    with zipfile.ZipFile(tmp_path / wheel) as z:
        names = set(z.namelist())
        z.extractall(tmp_path / "site")
        # every module and config file in the wheel is the checkout's, byte for byte
        for name in names:
            if name.endswith(".py"):
                assert z.read(name) == open(os.path.join(REPO, name), "rb").read(), name
    for name in (
        "model_configs/stages/det_student_zoph.py",
        "model_configs/_base_/default_runtime.py",
        "model_configs/det/retinanet_mnv2_256_cpu.py",
        "model_configs/tta/seg_default.py",
        "model_configs/pipelines/det.py",
        "selftrain/mm/configs/pipelines.py",
        "selftrain/datasets/composed_seg/__main__.py",
        "app/cli.py",
    ):
        assert name in names
    code = (
        "import selftrain.mm.configs as C; from selftrain.mm.configs.files import MODEL_CONFIGS;"
        "cfg = C.load_config('det/retinanet_mnv2_256_cpu');"
        "c = C.det_train_config(cfg, work_dir='/w', labeled=C.CocoSource('/a.json', '/i', ('t',)), val=None,"
        " iters=30, k=3, seed=0, pretrained=False);"
        "print(MODEL_CONFIGS, c.model.type)"
    )
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "site"))
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == [str(tmp_path / "site" / "model_configs"), "RetinaNet"]
