"""Every module of Loupe imports, and no two modules import each other, directly or around a circle.

The graph is read from the source with ``ast``: every ``import`` counts, those under ``if TYPE_CHECKING:``
and those inside functions included, so a cycle cannot hide behind a lazy or a type-only import.
"""

from __future__ import annotations

import ast
import importlib
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
