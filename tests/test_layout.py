"""The package's shape: no import cycle, modules of one concept (600 lines at most), subpackages
that say what they export, and a settings layer that imports nothing heavy."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from tests.helpers import ROOT, modules_loaded_by, package_modules

PACKAGE = ROOT / "urbangeo"
#: Modules allowed past 600 lines, each with its reason (none today).
LONG_MODULES: dict[str, str] = {}


def _modules() -> dict[str, Path]:
    return package_modules(PACKAGE)


def _top_level_imports(path: Path, name: str, known: set[str]) -> set[str]:
    """urbangeo modules imported when ``name`` is imported (module level, not in functions,
    not under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for sub in ast.walk(node) if isinstance(node, ast.If | ast.Try) else [node]:
            if isinstance(sub, ast.Import):
                found |= {a.name for a in sub.names}
            elif isinstance(sub, ast.ImportFrom):
                base = sub.module or ""
                if sub.level:
                    parent = package.split(".")
                    parent = parent[: len(parent) - sub.level + 1]
                    base = ".".join([*parent, base] if base else parent)
                found.add(base)
                found |= {f"{base}.{a.name}" for a in sub.names}
    return {m for m in found if m in known and m != name}


def test_no_import_cycle():
    """No two modules need each other at import time. A package's ``__init__`` importing its
    own submodules (re-exports) is not counted: it is how a package lists what it exports."""
    modules = _modules()
    graph = {
        name: {
            m
            for m in _top_level_imports(path, name, set(modules))
            if not (path.name == "__init__.py" and m.startswith(name + "."))
        }
        for name, path in modules.items()
    }
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError(" -> ".join([*stack[stack.index(nxt) :], nxt]))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_modules_hold_one_concept():
    long = {
        name: n
        for name, path in _modules().items()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > 600
    }
    assert set(long) <= set(LONG_MODULES), long


@pytest.mark.parametrize(
    "package", sorted(n for n, p in _modules().items() if p.name == "__init__.py")
)
def test_subpackages_say_what_they_export(package):
    module = importlib.import_module(package)
    assert isinstance(getattr(module, "__all__", None), list | tuple), package
    missing = [name for name in module.__all__ if getattr(module, name, None) is None]
    assert not missing, (package, missing)


def test_settings_and_cli_help_import_nothing_heavy():
    code = (
        "import urbangeo.settings, urbangeo.stage, urbangeo.geo, urbangeo.io;"
        "from urbangeo.settings import STAGE_SETTINGS;"
        "[c.describe() for c in STAGE_SETTINGS.values() if c.stage != 'embed']"
    )
    assert modules_loaded_by(code, ("torch", "open_clip", "spacy", "transformers")) == []
