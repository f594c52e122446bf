"""Multi-GPU launch: the torchrun command and the DDP config, checked without a GPU."""

import sys

import pytest

from selftrain.mm.configs import CocoSource, det_train_config, load_config
from selftrain.mm.launch import distributed_config, gpus, torchrun_command


def test_gpu_count_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("SELFTRAIN_GPUS", raising=False)
    assert gpus() == 1
    monkeypatch.setenv("SELFTRAIN_GPUS", "4")
    assert gpus() == 4
    for bad in ("0", "two"):
        monkeypatch.setenv("SELFTRAIN_GPUS", bad)
        with pytest.raises(ValueError, match="SELFTRAIN_GPUS"):
            gpus()


def test_torchrun_command_runs_the_mmengine_entry_point_once_per_gpu():
    cmd = torchrun_command("/w/train_config.py", 8)
    assert cmd == [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=8",
        "-m",
        "selftrain.mm.launch",
        "/w/train_config.py",
    ]


def test_distributed_config_is_ddp_with_syncbn_and_round_trips_through_a_file(tmp_path):
    lab = CocoSource(str(tmp_path / "l.json"), "/x", ("tree",))
    cfg = det_train_config(
        load_config("det/retinanet_mnv2_256_cpu"),
        work_dir=str(tmp_path),
        labeled=lab,
        val=None,
        iters=30,
        k=3,
        seed=0,
        pretrained=False,
    )
    dist = distributed_config(cfg)
    assert dist.launcher == "pytorch" and dist.sync_bn == "torch"
    assert dist.env_cfg.dist_cfg.backend == "nccl"
    assert "launcher" not in cfg  # the single-process config is left alone
    path = tmp_path / "train_config.py"
    dist.dump(str(path))
    from mmengine.config import Config

    again = Config.fromfile(str(path))
    assert again.launcher == "pytorch" and again.train_cfg.max_iters == 30
    assert again.train_dataloader.batch_size == 4  # per GPU


def test_settings_read_every_variable_in_one_place_and_name_a_bad_one():
    from storage.settings import Settings, SettingsError

    s = Settings.from_env({"XDG_CACHE_HOME": "/xdg"})
    assert s.cache == "/xdg/selftrain" and s.work_dir == "/xdg/selftrain/work"
    assert s.shard_concurrency == 1 and s.gpus == 1 and s.dask_address is None and s.s3_endpoint_url is None
    s = Settings.from_env(
        {
            "SELFTRAIN_CACHE": "/c",
            "SELFTRAIN_WORK_DIR": "/w",
            "SELFTRAIN_SHARD_CONCURRENCY": "3",
            "AWS_ENDPOINT_URL": "http://aws",
            "SELFTRAIN_DATA": "/d",
        }
    )
    assert (s.cache, s.work_dir, s.shard_concurrency, s.s3_endpoint_url, s.data) == ("/c", "/w", 3, "http://aws", "/d")
    both = {"AWS_ENDPOINT_URL": "http://aws", "SELFTRAIN_S3_ENDPOINT_URL": "http://mine"}
    assert Settings.from_env(both).s3_endpoint_url == "http://mine"  # the project's own variable wins
    with pytest.raises(SettingsError, match="SELFTRAIN_SHARD_CONCURRENCY must be a whole number, got 'two'"):
        Settings.from_env({"SELFTRAIN_SHARD_CONCURRENCY": "two"})
