"""No import cycles in clip_perception, lazy (function-level) imports included.

Every module's source is parsed and every ``import`` / ``from ... import`` in it,
at any depth, becomes an edge to the package module it names. A cycle among
modules, or among ``core/``'s subpackages, fails with the cycle spelled out.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "clip_perception"
ROOT = "clip_perception"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts}


def imports_of(name: str, path: Path, modules: set[str]) -> set[str]:
    """The package modules ``name`` imports anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source
                       for a in node.names]
        else:
            continue
        found.update(t for t in targets if t.startswith(ROOT) and t in modules)
    found.discard(name)
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path that returns to its start, or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: imports_of(name, path, set(modules)) for name, path in modules.items()}


def core_part(module: str) -> str | None:
    """``core``'s subpackage (or top-level module) a module belongs to."""
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[1] == "core" else None


def test_the_parser_sees_lazy_and_relative_imports(graph) -> None:
    """The check can fail: it sees what the modules really import."""
    loading = graph["clip_perception.core.model.loading"]
    assert "clip_perception.core.remote.triton_encoder" in loading  # a lazy import
    assert "clip_perception.core.encoder" in loading                # a relative one
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_module_import_cycle(graph) -> None:
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_core_subpackages_depend_in_one_direction(graph) -> None:
    parts: dict[str, set[str]] = {}
    for module, targets in graph.items():
        if (part := core_part(module)) is None:
            continue
        parts.setdefault(part, set()).update(
            p for t in targets if (p := core_part(t)) is not None and p != part)
    assert find_cycle(parts) is None, " -> ".join(find_cycle(parts))


def test_core_imports_nothing_outside_core(graph) -> None:
    leaks = {m: sorted(t for t in ts if not t.startswith(f"{ROOT}.core"))
             for m, ts in graph.items() if m.startswith(f"{ROOT}.core")}
    assert not {m: t for m, t in leaks.items() if t}


def test_the_encoder_contract_imports_nothing_of_the_package(graph) -> None:
    assert graph["clip_perception.core.encoder"] == set()
