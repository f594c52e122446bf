"""The house's layers point one way: deploy -> app -> flows -> tasks -> selftrain -> storage.

Every import in a package's modules (also those inside functions) names only packages below
it, or its own package; a task never imports another task (what stages share lives in
selftrain/). Third-party imports are not the house's concern here."""

from __future__ import annotations

import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAYERS = ["storage", "selftrain", "tasks", "flows", "app", "deploy"]  # bottom to top


def imports(path: str) -> list[tuple[int, str]]:
    tree = ast.parse(open(path).read(), path)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
    return out


def modules(package: str) -> list[str]:
    found = []
    for folder, _, files in os.walk(os.path.join(REPO, package)):
        found += [os.path.join(folder, f) for f in files if f.endswith(".py")]
    return sorted(found)


def violations(package: str) -> list[str]:
    level = LAYERS.index(package)
    bad = []
    for path in modules(package):
        rel = os.path.relpath(path, REPO)
        for line, name in imports(path):
            top = name.split(".")[0]
            if top not in LAYERS:
                continue
            if LAYERS.index(top) > level:
                bad.append(f"{rel}:{line} imports {name} (a higher layer)")
            elif package == "tasks" and top == "tasks" and name != "tasks":
                own = "tasks." + os.path.splitext(os.path.basename(path))[0]
                if name != own:
                    bad.append(f"{rel}:{line} imports {name} (another task: shared code belongs in selftrain/)")
    return bad


@pytest.mark.parametrize("package", LAYERS)
def test_imports_point_down(package):
    assert violations(package) == []


def test_the_check_sees_a_violation(tmp_path, monkeypatch):
    """The check itself: a task importing another task, and the library importing a flow, are found."""
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "a.py").write_text("from tasks.b import helper\n")
    (tmp_path / "selftrain").mkdir()
    (tmp_path / "selftrain" / "x.py").write_text("def f():\n    from flows.self_training import run\n")
    import sys

    monkeypatch.setattr(sys.modules[__name__], "REPO", str(tmp_path))
    assert violations("tasks") == ["tasks/a.py:1 imports tasks.b (another task: shared code belongs in selftrain/)"]
    assert violations("selftrain") == ["selftrain/x.py:2 imports flows.self_training (a higher layer)"]


KIND_NAMES = {"detection", "segmentation"}
KIND_OBJECTS = {"DETECTION", "SEGMENTATION"}


def kind_forks(path: str) -> list[str]:
    """Comparisons that decide the task kind outside its seam: ``x == "detection"`` (or
    ``!=``, ``in``), ``kind is SEGMENTATION``."""
    tree = ast.parse(open(path).read(), path)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        for side in [node.left, *node.comparators]:
            named = isinstance(side, ast.Constant) and side.value in KIND_NAMES
            named = named or isinstance(side, ast.Name) and side.id in KIND_OBJECTS
            if named:
                found.append(f"{os.path.relpath(path, REPO)}:{node.lineno}")
                break
    return found


def test_the_task_kind_is_decided_in_one_place():
    """Detection-or-segmentation is decided by selftrain/kinds.py (a TaskKind chosen from the
    registered set, or KINDS[task]); no other module compares against a kind's name or object."""
    seam = os.path.join(REPO, "selftrain", "kinds.py")
    packages = [*LAYERS, "benchmarks"]
    forks = [f for package in packages for path in modules(package) if path != seam for f in kind_forks(path)]
    assert forks == []


def test_the_kind_check_sees_a_fork(tmp_path):
    bad = tmp_path / "t.py"
    bad.write_text('def f(task, kind):\n    if task == "detection":\n        pass\n    return kind is SEGMENTATION\n')
    assert len(kind_forks(str(bad))) == 2
