"""The Prefect UI as a person sees it: headless Chromium (Debian's, installed by the set-up)
loads the deployments page and a finished self-training run's artifacts from a real server;
the screenshots are kept under runs/test-outputs/."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest
from PIL import Image

from tests.integration.test_deployments import REPO, register

pytestmark = pytest.mark.integration
OUTPUTS = os.path.join(REPO, "runs", "test-outputs")


def chromium(url: str, screenshot: str | None = None, expect: tuple[str, ...] = (), attempts: int = 4) -> str:
    """The page's DOM after its scripts ran (and a screenshot of it).

    The UI fetches its data after the page loads; on a loaded machine (CI) one pass of headless
    Chromium can end before that, with the app still empty. So the page is loaded again, with more
    time, until every string of `expect` is in it (the caller then asserts on the last DOM)."""
    exe = shutil.which("chromium")
    assert exe, "Debian's chromium is missing: deploy/setup.sh installs it (apt-get install chromium)"
    dom = ""
    for attempt in range(attempts):
        args = [
            exe,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--window-size=1400,1000",
            f"--virtual-time-budget={20000 * (attempt + 1)}",
        ]
        dom = subprocess.run([*args, "--dump-dom", url], capture_output=True, text=True, timeout=180, check=True).stdout
        if all(e in dom for e in expect):
            break
        time.sleep(2 * (attempt + 1))
    if screenshot:
        subprocess.run([*args, f"--screenshot={screenshot}", url], capture_output=True, timeout=180, check=True)
    return dom


def finished_run(server) -> str:
    """The id of a completed self-training flow run that published its report."""
    code = (
        "import json\nfrom prefect.client.orchestration import get_client\n"
        "from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter, "
        "FlowRunFilterState, FlowRunFilterStateType\n"
        "with get_client(sync_client=True) as c:\n"
        "    runs = c.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=['self-training'])),"
        " flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=['COMPLETED']))))\n"
        "    print(json.dumps([str(r.id) for r in runs]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=server.env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return (json.loads(out.stdout.strip().splitlines()[-1]) or [None])[0]


def latest_artifact_description(server, key: str) -> str | None:
    """The description of the newest artifact with this key (the one its page shows first)."""
    code = (
        "from prefect.client.orchestration import get_client\n"
        "from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey\n"
        "from prefect.client.schemas.sorting import ArtifactSort\n"
        "with get_client(sync_client=True) as c:\n"
        f"    a = c.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[{key!r}])),"
        " sort=ArtifactSort.CREATED_DESC, limit=1)\n"
        "    print(a[0].description if a else None)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=server.env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    last = out.stdout.strip().splitlines()[-1]
    return None if last == "None" else last


def test_ui_shows_the_deployments_and_a_runs_artifacts(prefect_server, tmp_path):
    os.makedirs(OUTPUTS, exist_ok=True)
    register(prefect_server)
    shot = os.path.join(OUTPUTS, "ui-deployments.png")
    names = ("relabel-demo", "cityscapes", "voc", "coco", "watch-unlabeled")
    dom = chromium(f"{prefect_server.ui_url}/deployments", shot, expect=names)
    for name in names:
        assert name in dom, f"{name} not on the deployments page (screenshot: {shot})"
    assert "Something went wrong" not in dom
    img = Image.open(shot).convert("L")
    assert img.size == (1400, 1000) and len(set(img.getdata())) > 20  # a rendered page, not a blank one

    keys = tuple(f"deepforest-self-training-{k}" for k in ("report", "metrics", "pseudo-labels", "artifacts"))
    run_id = finished_run(prefect_server)
    if run_id is None or latest_artifact_description(prefect_server, keys[1]) is None:
        # this test alone: make one finished run of the demo's dataset
        from tests.integration.test_detection_flow import demo

        demo(str(tmp_path), prefect_server)
        run_id = finished_run(prefect_server)
    # the run's page (its graph draws the artifacts on a canvas: kept as a screenshot) ...
    chromium(f"{prefect_server.ui_url}/runs/flow-run/{run_id}", os.path.join(OUTPUTS, "ui-run.png"))
    # ... and the artifacts it published, by key, as the UI lists them
    shot = os.path.join(OUTPUTS, "ui-artifacts.png")
    dom = chromium(f"{prefect_server.ui_url}/artifacts", shot, expect=keys)
    for key in keys:
        assert key in dom, f"artifact {key} not listed (screenshot: {shot})"
    shot = os.path.join(OUTPUTS, "ui-metrics-artifact.png")
    # artifact keys are per dataset: the detection dataset's metrics page heads with its description
    description = latest_artifact_description(prefect_server, keys[1])
    assert description == "COCO bbox metrics"
    dom = chromium(f"{prefect_server.ui_url}/artifacts/key/{keys[1]}", shot, expect=(keys[1], description))
    assert keys[1] in dom and description in dom, f"metrics artifact page ({shot})"
