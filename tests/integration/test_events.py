"""Event-driven re-labeling against a real Prefect server: the watcher emits
`selftrain.unlabeled.landed` for images it has not seen, once; the `relabel-demo` deployment's
trigger turns each event into a flow run for exactly that prefix."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from tests.integration.test_deployments import REPO, register

pytestmark = pytest.mark.integration


def watch(server, prefix, store, output=None):
    """Run the watcher as a user does; the number of images it announced (its output appended
    to ``output`` when given)."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "flows.watch_unlabeled",
            "--dataset",
            "deepforest",
            "--prefix",
            str(prefix),
            "--store",
            str(store),
        ],
        env=server.env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    if output is not None:
        output.append(out.stdout + out.stderr)
    return int(out.stdout.strip().splitlines()[-1].split()[0])


def relabel_runs(server):
    """Flow runs of self-training/relabel-demo, as the server sees them."""
    code = (
        "import json\nfrom prefect.client.orchestration import get_client\n"
        "from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName\n"
        "with get_client(sync_client=True) as c:\n"
        "    only = DeploymentFilter(name=DeploymentFilterName(any_=['relabel-demo']))\n"
        "    runs = c.read_flow_runs(deployment_filter=only)\n"
        "    print(json.dumps([{'id': str(r.id), 'unlabeled': r.parameters.get('unlabeled'),"
        " 'store': r.parameters.get('store')} for r in runs]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=server.env(), cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    import json

    return json.loads(out.stdout.strip().splitlines()[-1])


def wait_for_runs(server, n, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = relabel_runs(server)
        if len(runs) >= n:
            return runs
        time.sleep(2)
    return relabel_runs(server)


def delete_runs(server):
    code = (
        "from prefect.client.orchestration import get_client\n"
        "from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName\n"
        "with get_client(sync_client=True) as c:\n"
        "    only = DeploymentFilter(name=DeploymentFilterName(any_=['relabel-demo']))\n"
        "    for r in c.read_flow_runs(deployment_filter=only):\n"
        "        c.delete_flow_run(r.id)\n"
    )
    subprocess.run([sys.executable, "-c", code], env=server.env(), cwd=REPO, timeout=120, check=True)


def test_new_images_emit_one_event_that_starts_a_relabel_run_for_the_prefix(prefect_server, tmp_path):
    register(prefect_server)
    delete_runs(prefect_server)
    prefix, store = tmp_path / "landing", tmp_path / "store"
    prefix.mkdir()
    for i in range(2):
        Image.fromarray(np.full((8, 8, 3), i, np.uint8)).save(prefix / f"a{i}.png")
    (prefix / "._a0.png").write_bytes(b"macOS metadata")  # a hidden file: left out, warned once
    outputs: list[str] = []
    try:
        assert watch(prefect_server, prefix, store, outputs) == 2
        runs = wait_for_runs(prefect_server, 1)
        assert [r["unlabeled"] for r in runs] == [str(prefix)]  # the prefix templated from the event
        assert [r["store"] for r in runs] == [str(store)]  # into the store the watcher looked at

        assert watch(prefect_server, prefix, store, outputs) == 0  # idempotent: nothing new, no event
        assert "left out (hidden name), e.g. ._a0.png" in outputs[0]
        assert "left out" not in outputs[1]  # an unchanged listing does not warn again
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(prefix / "b.png")
        assert watch(prefect_server, prefix, store) == 1  # only the image it had not seen
        runs = wait_for_runs(prefect_server, 2)
        assert len(runs) == 2 and {r["unlabeled"] for r in runs} == {str(prefix)}
        time.sleep(5)
        assert len(relabel_runs(prefect_server)) == 2  # the repeated watch started nothing
        (prefix / "a1.png").unlink()
        assert watch(prefect_server, prefix, store) == 0  # a removed image announces nothing
        for image in prefix.glob("[!.]*.png"):
            image.unlink()  # only the hidden file is left: a warning, nothing announced, no failure
        assert [p.name for p in prefix.iterdir()] == ["._a0.png"]
        assert watch(prefect_server, prefix, store, outputs) == 0
        assert "nothing to announce: the unlabeled set is empty" in outputs[-1]
    finally:
        delete_runs(prefect_server)  # never leave a 900-iteration run for a worker to find
        shutil.rmtree(prefix, ignore_errors=True)
