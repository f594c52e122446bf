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
    assert "model_wrapper_cfg" not in dist  # mmengine's default: DDP on the local rank's GPU
    cpu = distributed_config(cfg, cuda=False)  # CPU processes: gloo, plain BatchNorm, no device ids
    assert cpu.launcher == "pytorch" and "sync_bn" not in cpu
    assert cpu.env_cfg.dist_cfg.backend == "gloo"
    assert cpu.model_wrapper_cfg == dict(
        type="MMDistributedDataParallel", device_ids=None, broadcast_buffers=False, find_unused_parameters=True
    )
    assert dist.find_unused_parameters is True  # mmengine's default wrapper reads it on CUDA

    assert "launcher" not in cfg  # the single-process config is left alone
    path = tmp_path / "train_config.py"
    dist.dump(str(path))
    from mmengine.config import Config

    again = Config.fromfile(str(path))
    assert again.launcher == "pytorch" and again.train_cfg.max_iters == 30
    assert again.train_dataloader.batch_size == 4  # per GPU


def test_a_model_configs_own_syncbn_becomes_bn_on_cpu_processes(tmp_path):
    """mmseg's DeepLabV3+ bases set norm_cfg=dict(type='SyncBN'): on gloo every one becomes BN."""
    from selftrain.mm.configs import SegSource, seg_train_config

    cfg = seg_train_config(
        load_config("seg/deeplabv3plus_r50_512_voc12aug", "seg"),
        work_dir=str(tmp_path),
        labeled=SegSource(str(tmp_path / "l.json"), ("background", "thing")),
        val=None,
        iters=30,
        k=3,
        seed=0,
        pretrained=False,
    )
    assert "SyncBN" in str(cfg.model)  # the config as mmseg ships it
    cpu = distributed_config(cfg, cuda=False)
    assert "SyncBN" not in str(cpu.model) and cpu.model.backbone.norm_cfg.type == "BN"
    assert cpu.model.decode_head.norm_cfg.type == "BN"
    assert "SyncBN" in str(distributed_config(cfg).model)  # on CUDA it stays


def test_more_processes_than_visible_gpus_is_refused(tmp_path, monkeypatch):
    import selftrain.mm.launch as launch

    monkeypatch.setattr(launch, "cuda_devices", lambda: 2)  # this machine has no GPU to count
    with pytest.raises(ValueError, match="SELFTRAIN_GPUS=4 but this machine has 2 visible CUDA device"):
        launch.train_distributed(None, str(tmp_path), 4)  # refused before the config is used
    assert not (tmp_path / "train_config.py").exists()
    monkeypatch.setattr(launch, "cuda_devices", lambda: 0)
    monkeypatch.setattr(launch, "usable_cores", lambda: 2)
    with pytest.raises(
        ValueError, match="SELFTRAIN_GPUS=3 CPU processes .no CUDA device. but this machine has 2 cores"
    ):
        launch.train_distributed(None, str(tmp_path), 3)


def test_progress_lines_are_relayed_whole_and_the_training_is_stopped_on_cancel(tmp_path):
    """A line written in pieces (the prefix, then the rest; a UTF-8 character split between
    writes) is relayed once, whole; other lines are not; the last line is read after the end."""
    import subprocess
    import time

    from selftrain.mm.launch import WORKER_PROGRESS, relay_progress, stop

    writer = (
        "import sys, time\n"
        "out = sys.stdout.buffer\n"
        f"pieces = [b'noise\\n{WORKER_PROGRESS[:5]}', b'{WORKER_PROGRESS[5:]}train: [##', b'..] 1/2 \\xc3',"
        f" b'\\xa9t\\xc3\\xa9\\n[rank1]: x\\n', b'{WORKER_PROGRESS}train: 2/2']\n"
        "for p in pieces:\n"
        "    out.write(p); out.flush(); time.sleep(0.3)\n"
    )
    log_path = tmp_path / "train_processes.log"
    log_path.write_bytes(b"an earlier attempt\n" + WORKER_PROGRESS.encode() + b"old\n")
    start = log_path.stat().st_size
    with open(log_path, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-c", writer], stdout=out)
        got: list[str] = []
        relay_progress(proc, str(log_path), start, got.append, every_s=0.05)
    assert got == ["train: [##..] 1/2 été", "train: 2/2"]  # the last line has no newline: read at the end

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    t0 = time.monotonic()
    stop(sleeper, grace_s=5)
    assert sleeper.poll() is not None and time.monotonic() - t0 < 5  # SIGTERM ended it


def test_the_last_error_lines_of_the_ranks_log_are_quoted(tmp_path):
    from selftrain.mm.launch import last_errors

    log = tmp_path / "train_processes.log"
    log.write_text(
        "old attempt\nKeyError: 'from before'\n"
        "[rank1]: Traceback (most recent call last):\n"
        '[rank1]:   File "x.py", line 3, in f\n'
        "[rank1]: RuntimeError: Expected to have finished reduction in the prior iteration\n"
        "[rank0]: RuntimeError: Expected to have finished reduction in the prior iteration\n"
        "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: \n"
        "an ordinary line about errors\n"
    )
    start = len("old attempt\nKeyError: 'from before'\n")
    assert last_errors(str(log), start) == (
        ": RuntimeError: Expected to have finished reduction in the prior iteration"
        " | torch.distributed.elastic.multiprocessing.errors.ChildFailedError:"
    )
    assert last_errors(str(log)).startswith(": KeyError: 'from before' | RuntimeError")
    log.write_text("all went well\n")
    assert last_errors(str(log)) == ""


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


def test_outage_retries_are_a_doubling_delay_within_a_bound():
    from storage.settings import Settings, SettingsError

    assert Settings.from_env({}).outage_retry_delays() == [5, 10, 20, 40]  # about 75 s ridden out
    s = Settings.from_env({"SELFTRAIN_OUTAGE_RETRIES": "7", "SELFTRAIN_OUTAGE_RETRY_DELAY_S": "15"})
    assert s.outage_retry_delays() == [15, 30, 60, 60, 60, 60, 60]  # doubled, at most 60 s each
    assert Settings.from_env({"SELFTRAIN_OUTAGE_RETRIES": "0"}).outage_retry_delays() == []
    with pytest.raises(SettingsError, match="SELFTRAIN_OUTAGE_RETRIES must be between 0 and 20, got 21"):
        Settings.from_env({"SELFTRAIN_OUTAGE_RETRIES": "21"})


def test_only_a_storage_outage_is_retried():
    from selftrain.mm.transforms import InfrastructureError
    from selftrain.stage import ModelNotFound, is_storage_outage
    from storage.store import CorruptArtifact, StorageAccessDenied, StorageUnavailable

    assert is_storage_outage(StorageUnavailable("reading s3://b/x at s3://b: EndpointConnectionError"))
    try:  # an image read that failed because the storage was down, after its own retries
        raise InfrastructureError("storage unavailable while reading image s3://b/1.png") from StorageUnavailable("x")
    except InfrastructureError as exc:
        assert is_storage_outage(exc)
    for error in (
        StorageAccessDenied("denied"),
        CorruptArtifact("s3://b/x does not match its manifest"),
        ModelNotFound("no such model"),
        FileNotFoundError("s3://b/missing.png"),
        ValueError("a user's bad parameter"),
    ):
        assert not is_storage_outage(error), error


def test_a_full_disk_or_a_deleted_scratch_folder_is_named_and_other_errors_pass(tmp_path):
    import errno
    import shutil

    from selftrain.stage import ScratchError, scratch_guard

    work = tmp_path / "work" / "deepforest" / "train" / "k"
    work.mkdir(parents=True)
    with pytest.raises(
        ScratchError, match=rf"train teacher: scratch folder {work}: the disk is full .*SELFTRAIN_WORK_DIR"
    ):
        with scratch_guard(str(work), "train teacher"):
            raise OSError(errno.ENOSPC, "No space left on device", str(work / "iter_40.pth"))
    with pytest.raises(ScratchError, match="the disk is full"):  # torch.save's own wording of it
        with scratch_guard(str(work), "train teacher"):
            raise RuntimeError(
                "[enforce fail at inline_container.cc:603] . PytorchStreamWriter failed: file write failed"
            )
    with pytest.raises(ScratchError, match="the folder was deleted while the stage ran"):
        with scratch_guard(str(work), "train teacher"):
            shutil.rmtree(work)
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(work / "iter_40.pth"))
    work.mkdir(parents=True)
    with pytest.raises(ValueError, match="a user's bad value"):  # not the scratch folder's failure
        with scratch_guard(str(work), "train teacher"):
            raise ValueError("a user's bad value")


def test_checkpoints_missing_after_a_training_fail_it_and_the_rerun_trains_again(tmp_path):
    import torch

    from selftrain.stage import ScratchError, check_checkpoints

    work = tmp_path / "work"
    work.mkdir()
    ckpts = [str(work / f"iter_{i}.pth") for i in (20, 40, 60)]
    for c in ckpts[1:]:
        torch.save({"state_dict": {}}, c)  # complete checkpoints
    (work / "last_checkpoint").write_text(ckpts[-1])
    check_checkpoints(str(work), ckpts[1:], "train teacher")  # all there: nothing happens
    assert (work / "last_checkpoint").exists()
    with pytest.raises(ScratchError, match=rf"train teacher: scratch folder {work}: checkpoints \['iter_20.pth'\] are"):
        check_checkpoints(str(work), ckpts, "train teacher")
    assert not (work / "last_checkpoint").exists()  # the re-run does not resume past the gap
