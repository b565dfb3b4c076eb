"""The tests mirror runner's layout, and share helpers one way only.

Why: a test module that imports another (or tests/conftest.py) runs that
module's import-time code twice under two names and ties the two files
together; helpers live in tests/helpers.py and fixtures in tests/conftest.py,
which pytest finds by itself.  A package without its tests/<package>/
folder is one whose tests nobody can find.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers import ROOT

TESTS = ROOT / "tests"
NOT_TESTS = {"data", "schemas", "__pycache__"}  # folders of test data, not of test modules


def packages() -> list[str]:
    """runner's subpackages: each folder of runner/ with an __init__.py."""
    return sorted(p.parent.name for p in (ROOT / "runner").glob("*/__init__.py"))


def imported(source: str, path: Path) -> list[tuple[int, str]]:
    """Every module `source` (the file at `path`) imports, with its line; relative imports made absolute.

    `from X import name` counts as importing X and X.name, since name may be a module (`from tests import test_x`).
    """
    package = path.relative_to(ROOT).parent.parts
    found = []
    for node in ast.walk(ast.parse(source, str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package[:len(package) - node.level + 1], *([base] if base else [])])
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def forbidden(module: str) -> bool:
    """tests.conftest, or a test module: what no file of tests/ may import."""
    parts = module.split(".")
    return parts[-1] == "conftest" or any(part.startswith("test_") for part in parts)


def test_no_module_imports_conftest_or_another_test_module():
    sources = [p for p in sorted(TESTS.rglob("*.py")) if not NOT_TESTS & set(p.relative_to(TESTS).parts)]
    assert len(sources) > 50
    bad = [f"{path.relative_to(ROOT)}:{line}: imports {module}"
           for path in sources for line, module in imported(path.read_text(encoding="utf-8"), path)
           if forbidden(module)]
    assert not bad, ("import helpers from tests.helpers, never from conftest.py (its fixtures need no import) "
                     "nor from a test module:\n" + "\n".join(bad))


@pytest.mark.parametrize("source", [
    "from tests.conftest import chat", "import tests.conftest", "from tests.test_run import config",
    "from tests.engine.test_loop import run_rows", "from tests.engine import test_loop",
    "from .test_loop import chat", "from . import test_loop", "from ..conftest import chat",
    "def f():\n    from tests.conftest import execute",
])
def test_the_check_sees_each_form_of_a_forbidden_import(source):
    assert any(forbidden(m) for _, m in imported(source, TESTS / "engine" / "test_example.py")), source


@pytest.mark.parametrize("source", ["from tests.helpers import chat", "from runner.engine.loop import Engine",
                                    "import pytest", "from .. import helpers"])
def test_the_check_lets_helpers_and_the_code_under_test_through(source):
    assert not any(forbidden(m) for _, m in imported(source, TESTS / "engine" / "test_example.py")), source


@pytest.mark.parametrize("package", packages())
def test_every_package_has_its_tests_folder(package):
    assert list((TESTS / package).glob("test_*.py")), f"runner/{package}/ has no tests/{package}/test_*.py"


def test_every_tests_folder_is_a_package_named_after_one_of_runners():
    """An __init__.py in each, so two folders may hold test modules of the same name; no stray folder."""
    assert (TESTS / "__init__.py").is_file()
    folders = [p for p in TESTS.iterdir() if p.is_dir() and p.name not in NOT_TESTS]
    assert folders
    for folder in folders:
        assert folder.name in packages(), f"tests/{folder.name}/ names no package of runner/"
        assert (folder / "__init__.py").is_file(), f"tests/{folder.name}/ has no __init__.py"


# ---- the README's layout is the import order


def readme_layout() -> list[str]:
    """The README's Development tree, top to bottom: runner's packages and top-level modules as named there
    ("runner/engine/" -> "engine", "runner/run.py" -> "run")."""
    text = (ROOT / "README.md").read_text()
    block = text[text.index("## Development"):]
    block = block[block.index("```text") + 7:]
    block = block[:block.index("```")]
    return [line.split()[0].removeprefix("runner/").removesuffix("/").removesuffix(".py")
            for line in block.splitlines() if line.startswith("runner/")]


def runner_imports() -> dict[str, set[str]]:
    """For each of runner's packages and top-level modules, the others it imports (anywhere in its files)."""
    edges: dict[str, set[str]] = {}
    for path in (ROOT / "runner").rglob("*.py"):
        parts = path.relative_to(ROOT / "runner").with_suffix("").parts
        if parts == ("__init__",):
            continue
        unit = parts[0]
        for _, module in imported(path.read_text(), path):
            names = module.split(".")
            if names[0] == "runner" and len(names) > 1 and names[1] != unit:
                edges.setdefault(unit, set()).add(names[1])
    return edges


def test_each_package_in_the_readme_imports_only_those_above_it():
    order = readme_layout()
    assert {"io", "stream", "engine", "cli", "run"} <= set(order)
    rank = {name: i for i, name in enumerate(order)}
    units = set(packages()) | {p.stem for p in (ROOT / "runner").glob("*.py") if p.stem != "__init__"}
    unlisted = sorted(units - set(rank) - {"aio", "extras", "logs", "preflight"})  # named beside others there
    assert not unlisted, f"the README's Development tree lacks {unlisted}"
    rank.update({"aio": rank["errors"], "extras": rank["errors"], "logs": rank["stream"], "preflight": rank["plan"]})
    upward = sorted(f"{a} -> {b}" for a, bs in runner_imports().items() for b in bs
                    if a in rank and b in rank and rank[b] > rank[a])
    assert not upward, f"imports that run down the README's list (each may import only those above it): {upward}"
