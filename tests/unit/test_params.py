"""The flow's parameters: renamed names keep working, with a deprecation message."""

from __future__ import annotations

import inspect
import os

import pytest

from deploy.deployments import demo_parameters
from flows.params import RENAMED, SelfTrainingParams, rename_deprecated


def test_the_old_spelling_labelled_still_works_and_says_it_is_deprecated():
    params = demo_parameters()
    old = dict(params, labelled=params.pop("labeled"))
    with pytest.warns(FutureWarning, match="'labelled' is deprecated.*use 'labeled'"):
        p = SelfTrainingParams(**old)
    assert p.labeled == SelfTrainingParams(**demo_parameters()).labeled
    assert "labelled" not in p.model_dump()


def test_both_spellings_at_once_is_an_error_naming_both():
    params = demo_parameters()
    with pytest.raises(ValueError, match="'labelled' is the deprecated name of 'labeled'"):
        SelfTrainingParams(**params, labelled=params["labeled"])


def test_rename_deprecated_moves_values_and_reports_each_old_name():
    messages = []
    out = rename_deprecated({"labelled": {"a": 1}, "seed": 3}, warn=messages.append)
    assert out == {"labeled": {"a": 1}, "seed": 3}
    assert messages == ["parameter 'labelled' is deprecated and will be removed; use 'labeled'"]
    # the flow's signature passes None for a deprecated name that was not given
    assert rename_deprecated({"labelled": None, "labeled": {"a": 1}}, warn=messages.append) == {"labeled": {"a": 1}}
    assert len(messages) == 1
    assert RENAMED == {"labelled": "labeled"}


def test_the_flow_accepts_the_deprecated_name_so_saved_deployments_keep_running():
    from flows.self_training import self_training

    sig = inspect.signature(self_training.fn)
    assert sig.parameters["labelled"].default is None
    assert sig.parameters["labeled"].default is None  # one of the two is required, by the model
    with pytest.raises(ValueError, match="labeled"):
        SelfTrainingParams(**{k: v for k, v in demo_parameters().items() if k != "labeled"})


@pytest.mark.parametrize(
    "field, url",
    [
        ("store", "s3://AKIAEXAMPLE:sentinel-s3cr3t@bucket/store"),
        ("unlabeled", "s3://AKIAEXAMPLE:sentinel-s3cr3t@bucket/pool/"),
        ("unlabeled", "https://host/pool/?X-Amz-Signature=sentinel-s3cr3t"),
        ("unlabeled_gt", "s3://user:sentinel-s3cr3t@bucket/gt.json"),
        ("labeled.image_root", "s3://user:sentinel-s3cr3t@bucket/images"),
        ("labeled.ann_file", "https://host/ann.json?token=sentinel-s3cr3t"),
    ],
)
def test_a_credential_in_any_url_parameter_is_refused_without_being_echoed(field, url):
    params = demo_parameters()
    if "." in field:
        part, key = field.split(".")
        params[part] = dict(params[part], **{key: url})
    else:
        params[field] = url
    with pytest.raises(ValueError, match="carries credentials in the URL") as err:
        SelfTrainingParams(**params)
    assert "sentinel-s3cr3t" not in str(err.value)
    assert field.split(".")[-1] in str(err.value)  # the message names the parameter


def test_selftrain_run_turns_off_the_temporary_servers_telemetry_unless_the_user_set_it(tmp_path, monkeypatch):
    """The temporary Prefect server's telemetry tried to phone home and locked its SQLite database
    ('database is locked' tracebacks on every `selftrain run`): the command line turns it off by
    default, before the parameters are even read; a user's own setting is kept."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from app.cli import main
    from app.local_prefect import EarlyServer

    bad = tmp_path / "params.json"
    bad.write_text("{}")  # invalid: the command returns 2 before any flow runs
    monkeypatch.delenv("PREFECT_SERVER_ANALYTICS_ENABLED", raising=False)
    monkeypatch.delenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", raising=False)
    # a server is named, so no temporary server starts (tests/integration/test_cli_run.py runs one)
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        assert EarlyServer().thread is None
        assert main(["run", str(bad)]) == 2
        assert os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
        assert os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] == "180"

        monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "true")
        assert main(["run", str(bad)]) == 2
        assert os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] == "true"
