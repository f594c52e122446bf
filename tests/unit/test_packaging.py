"""Packaging without an editable install: every package and the config files are in the wheel."""

from __future__ import annotations

import os
import tomllib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_every_package_of_the_project_is_listed_for_the_wheel():
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        listed = set(tomllib.load(f)["tool"]["setuptools"]["packages"])
    found = set()
    for top in ("app", "selftrain", "storage", "tasks", "flows", "deploy"):
        for folder, _, files in os.walk(os.path.join(REPO, top)):
            if "__init__.py" in files:
                found.add(os.path.relpath(folder, REPO).replace(os.sep, "."))
    assert found - listed == set(), "packages missing from pyproject.toml [tool.setuptools] packages"
    assert "model_configs" in listed  # the OpenMMLab config files, as package data
