"""The deployments against a real Prefect server and a real process worker, as a user runs
them: registered by `python -m deploy.deployments register`, started with
`prefect deployment run self-training/demo --param ...`, run to completion on a tiny slice."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.processes import stop_group

pytestmark = pytest.mark.integration
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def prefect(server, *args, timeout=300):
    out = subprocess.run(
        [sys.executable, "-m", "prefect", *args],
        env=server.env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


def register(server):
    # schedules paused: the watcher must not fire on the repository's demo data during tests
    out = subprocess.run(
        [sys.executable, "-m", "deploy.deployments", "register", "--paused-schedules"],
        env=server.env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "registered 6 deployments" in out.stdout


@pytest.fixture(scope="module")
def worker(prefect_server, tmp_path_factory):
    """Deployments registered and one process worker polling the pool."""
    register(prefect_server)
    log = open(str(tmp_path_factory.mktemp("worker") / "worker.log"), "w")
    env = prefect_server.env()
    env["SELFTRAIN_WORK_DIR"] = str(tmp_path_factory.mktemp("work"))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prefect",
            "worker",
            "start",
            "--pool",
            "selftrain-process",
            "--name",
            "test-worker",
            "--prefetch-seconds",
            "5",
        ],
        env=env,
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    yield proc, log.name
    stop_group(proc)


def fresh_shell(server, command: str, timeout=300) -> str:
    """``command`` in a new bash, as a user types it after `source deploy/env.sh` in a fresh
    shell: no PREFECT_* variables and no virtual environment in the environment."""
    port = server.api_url.rsplit(":", 1)[1].split("/")[0]
    env = {
        "HOME": os.environ.get("HOME", "/root"),
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "SELFTRAIN_PREFECT_PORT": port,
        "PREFECT_HOME": server.home,
        "SELFTRAIN_WORK_DIR": os.environ.get("SELFTRAIN_WORK_DIR", os.path.join(server.home, "work")),
    }
    out = subprocess.run(
        ["bash", "-c", f"source deploy/env.sh && {command}"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


def test_a_fresh_shell_finds_the_server_after_sourcing_env(prefect_server, worker):
    assert "self-training/demo" in fresh_shell(prefect_server, "prefect deployment ls")


def test_deployments_are_registered_with_defaults(prefect_server, worker):
    listing = prefect(prefect_server, "deployment", "ls")
    for name in (
        "self-training/demo",
        "self-training/coco",
        "self-training/voc",
        "self-training/cityscapes",
        "self-training/relabel-demo",
        "watch-unlabeled/demo",
    ):
        assert name in listing
    info = prefect(prefect_server, "deployment", "inspect", "self-training/voc")
    assert "deeplabv3plus_r101_512_voc12aug" in info and "st++" in info and "selftrain-process" in info


def test_deployment_run_from_the_cli_completes(prefect_server, worker, tmp_path):
    from selftrain.datasets.deepforest import prepare

    data = prepare(os.path.join(REPO, "runs", "demo", "data", "deepforest"))
    unlabeled = tmp_path / "unlabeled"
    unlabeled.mkdir()
    for path in sorted(glob.glob(os.path.join(data.unlabeled_dir, "*.png")))[:3]:
        shutil.copy(path, unlabeled)
    store = tmp_path / "store"
    # The README's smoke command, from a fresh shell, on 3 of the demo's tiles and a test store.
    out = fresh_shell(
        prefect_server,
        "prefect deployment run self-training/demo --param teacher_iters=30 "
        "--param student_iters=6 --param score_threshold=0.0 --watch --watch-timeout 900 "
        f"--param unlabeled={unlabeled} --param store={store}",
        timeout=960,
    )
    assert "Completed" in out, out + open(worker[1]).read()[-4000:]
    (report,) = glob.glob(f"{store}/deepforest/report/*/*/report.json")
    report = json.load(open(report))
    assert set(report["metrics"]) == {"teacher", "zoph"}
    assert report["parameters"]["teacher_iters"] == 30 and report["parameters"]["aug"] == "S1"  # default kept
    assert report["pseudo_labels"]["images"] == 3


def test_registering_again_keeps_parameters_edited_on_the_server(prefect_server, worker):
    edit = (
        "from prefect.client.orchestration import get_client\n"
        "from prefect.client.schemas.actions import DeploymentUpdate\n"
        "import sys\n"
        "with get_client(sync_client=True) as c:\n"
        "    d = c.read_deployment_by_name('self-training/coco')\n"
        "    if sys.argv[1] == 'set':\n"
        "        c.update_deployment(d.id, DeploymentUpdate(parameters=dict(d.parameters, score_threshold=0.3)))\n"
        "    print(c.read_deployment_by_name('self-training/coco').parameters.get('score_threshold'))\n"
    )

    def run(*args):
        out = subprocess.run(
            [sys.executable, "-c", edit, *args],
            env=prefect_server.env(),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        return out.stdout.strip().splitlines()[-1]

    try:
        assert run("set") == "0.3"  # a user edits a parameter in the UI
        out = subprocess.run(
            [sys.executable, "-m", "deploy.deployments", "register", "--paused-schedules"],
            env=prefect_server.env(),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert "kept the parameters edited on the server for self-training/coco" in out.stdout, out.stdout
        assert run("get") == "0.3"  # make serve registers again: the edit survives
        # make serve registers the schedules active; those paused on the server stay paused
        out = subprocess.run(
            [sys.executable, "-m", "deploy.deployments", "register"],
            env=prefect_server.env(),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert "kept the schedule" in out.stdout and "of watch-unlabeled/demo paused" in out.stdout, out.stdout
        schedules = subprocess.run(
            [sys.executable, "-m", "prefect", "deployment", "schedule", "ls", "watch-unlabeled/demo"],
            env=prefect_server.env(),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
        assert "False" in schedules and "True" not in schedules, schedules
    finally:
        out = subprocess.run(
            [sys.executable, "-m", "deploy.deployments", "register", "--paused-schedules", "--reset-parameters"],
            env=prefect_server.env(),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, out.stderr[-3000:]
    assert run("get") == "None"  # the default again: each method's paper threshold
