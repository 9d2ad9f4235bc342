"""The imports point one way (``benchmarks`` → ``app`` → ``index`` → ``eat_models``), the
UI sees only the services, and the library has no import cycle: checked on the source with
``ast`` (every import statement, at module level or inside a function)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("eat_models", "index", "app", "benchmarks")
#: what each layer may not import (the layers above it)
FORBIDDEN = {
    "eat_models": {"index", "app", "benchmarks", "eat_command"},
    "index": {"app", "benchmarks", "eat_command"},
    "app": {"benchmarks", "eat_command"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            found[_module_name(path)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, int]]:
    """``(imported module, line)`` for every import in the file: ``from pkg import name``
    counts as an import of ``pkg.name`` when that is a module, else of ``pkg``."""
    is_package = path.name == "__init__.py"
    here = name.split(".") if is_package else name.split(".")[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                out.append((sub if sub in MODULES else target, node.lineno))
    return out


def test_the_walk_sees_the_tree():
    assert {"eat_models.train", "index.cli", "app.ui.search_tab", "eat_models.data"} <= set(MODULES)
    seen = {m for m, _ in _imports("eat_models.data", MODULES["eat_models.data"])}
    assert {"eat_models.data.registry", "eat_models.data.splits"} <= seen


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_layer_imports_a_layer_above_it(layer):
    wrong = [
        f"{name}:{line} imports {target}"
        for name, path in MODULES.items()
        if name.split(".")[0] == layer
        for target, line in _imports(name, path)
        if target.split(".")[0] in FORBIDDEN[layer]
    ]
    assert not wrong, "\n".join(wrong)


def test_the_ui_imports_only_the_services():
    wrong = [
        f"{name}:{line} imports {target}"
        for name, path in MODULES.items()
        if name.startswith("app.ui")
        for target, line in _imports(name, path)
        if target.split(".")[0] in {"eat_models", "index", "benchmarks"}
    ]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle_inside_eat_models():
    graph = {
        name: {t for t, _ in _imports(name, path) if t in MODULES and t != name}
        for name, path in MODULES.items()
        if name.startswith("eat_models")
    }
    # a package's __init__ importing its own submodules (re-exports) is not a cycle
    # through the submodule's import of a sibling; only real module → module loops count
    for name in graph:
        graph[name] = {t for t in graph[name] if not name.startswith(t + ".")}
    cycles, state = [], {}

    def visit(node, trail):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(" → ".join([*trail[trail.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = "done"

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)
