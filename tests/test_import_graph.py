"""Every module of Loupe imports, and no two modules import each other, directly or around a circle.

The graph is read from the source with ``ast``: every ``import`` counts, those under ``if TYPE_CHECKING:``
and those inside functions included, so a cycle cannot hide behind a lazy or a type-only import.
"""

from __future__ import annotations

import ast
import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("loupe", "core", "indexer", "search", "ui")
# Scripts, parsed here but not imported: the Streamlit pages draw a page when run (AppTest runs them), the
# ``__main__`` modules run their command.
SCRIPTS = {"ui.app", "ui.views.duplicates", "ui.views.region", "ui.views.search"} | {
    f"{package}.__main__" for package in PACKAGES
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            if "migrations" not in path.parts:  # Alembic loads these by path, not by import
                modules[_module_name(path)] = path
    return modules


def _imported(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``name`` imports (``from package import module`` names the module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {module for module in found if module in known and module != name}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (a list of modules, the first repeated last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (found := visit(target)) is not None:
                return found
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module)) is not None:
            return found
    return None


def test_the_cycle_finder_finds_cycles() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_module_imports_itself_around_a_circle() -> None:
    modules = _modules()
    graph = {name: _imported(name, path, set(modules)) for name, path in modules.items()}
    assert {"indexer.committer", "indexer.summary"} <= graph["indexer.pipeline"]
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_write_side_imports_nothing_of_the_read_side() -> None:
    modules = _modules()
    for name, path in modules.items():
        if name.startswith("indexer"):
            read_side = {m for m in _imported(name, path, set(modules)) if m.split(".")[0] in ("search", "ui")}
            assert not read_side, f"{name} imports {sorted(read_side)}"


@pytest.mark.parametrize("module", sorted(set(_modules()) - SCRIPTS))
def test_every_module_imports(module: str) -> None:
    importlib.import_module(module)


def test_no_library_module_is_over_400_lines() -> None:
    """Small modules with one job each (docs/architecture.md); migrations are data, not library code."""
    sizes = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in _modules().items()}
    assert len(sizes) > 100
    assert {name: lines for name, lines in sizes.items() if lines > 400} == {}


def test_the_layer_contracts_hold_and_can_break(tmp_path: Path) -> None:
    """The import-linter contracts of pyproject.toml hold for the code, and fail for code that breaks one
    (a core module importing the search engine), so the check in CI is not one that cannot fail."""
    command = [sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()"]
    kept = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert kept.stdout.count("KEPT") == 3

    copy = tmp_path / "repo"
    for package in PACKAGES:
        shutil.copytree(REPO / package, copy / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", copy / "pyproject.toml")
    errors = copy / "core" / "errors.py"
    errors.write_text(errors.read_text(encoding="utf-8") + "\nimport search.engine  # noqa\n", encoding="utf-8")
    environment = {**os.environ, "PYTHONPATH": str(copy)}
    broken = subprocess.run(command, cwd=copy, capture_output=True, text=True, timeout=300, env=environment)
    assert broken.returncode != 0
    assert "core.errors -> search.engine" in broken.stdout
