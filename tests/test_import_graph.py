"""The package's imports point one way: no module imports, even inside a function, one that imports it back."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "perovskite_pes"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Package modules that ``path`` imports anywhere (top level or inside functions)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            base = base[: len(base) - node.level + 1] if node.level else []
            root = ".".join(base + ([node.module] if node.module else []))
            targets = [root] + [f"{root}.{a.name}" for a in node.names]
        else:
            continue
        out.update(t for t in targets if t in modules and t != name)
    return out


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    # edges between modules; a package's __init__ only re-exports, so it is left out of the cycle search
    return {
        m: {t for t in _imports(p, modules) if files[t].name != "__init__.py"}
        for m, p in files.items()
        if p.name != "__init__.py"
    }


def _cycle_through(graph: dict[str, set[str]], start: str) -> list[str] | None:
    stack = [(start, [start])]
    seen = set()
    while stack:
        node, path = stack.pop()
        for nxt in graph.get(node, ()):
            if nxt == start:
                return path + [start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, path + [nxt]))
    return None


def test_the_graph_sees_lazy_imports():
    graph = _graph()
    assert "perovskite_pes.workflows.builder" in graph["perovskite_pes.workflows.campaign"]  # inside submit_campaign
    assert "perovskite_pes.structure.mapping" in graph["perovskite_pes.structure.configuration"]


@pytest.mark.parametrize("layer", ["structure", "descriptors", "models", "workflows"])
def test_no_import_cycles(layer):
    graph = _graph()
    cycles = [c for m in sorted(graph) if m.startswith(f"perovskite_pes.{layer}.") and (c := _cycle_through(graph, m))]
    assert not cycles, " -> ".join(cycles[0])


def test_structure_depends_on_no_higher_layer():
    graph = _graph()
    higher = ("descriptors", "models", "simulation", "calculators", "db", "workflows", "cli")
    for module, targets in graph.items():
        if module.startswith("perovskite_pes.structure."):
            bad = [t for t in targets if t.split(".")[1] in higher]
            assert not bad, f"{module} imports {bad}"
