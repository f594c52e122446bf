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


def test_every_project_import_of_the_scripts_resolves():
    """benchmarks/ and app/ import the project lazily, inside functions: a module that moved
    must not leave them importing a name that no longer exists."""
    import ast
    import importlib

    missing = []
    for folder in ("benchmarks", "app"):
        for name in sorted(os.listdir(os.path.join(REPO, folder))):
            if not name.endswith(".py"):
                continue
            path = os.path.join(REPO, folder, name)
            for node in ast.walk(ast.parse(open(path).read(), path)):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    top = node.module.split(".")[0]
                    if top not in ("app", "flows", "tasks", "selftrain", "storage", "deploy"):
                        continue
                    module = importlib.import_module(node.module)
                    for alias in node.names:
                        if not hasattr(module, alias.name):
                            try:
                                importlib.import_module(f"{node.module}.{alias.name}")
                            except ImportError:
                                missing.append(f"{folder}/{name}:{node.lineno} {node.module}.{alias.name}")
    assert missing == []
