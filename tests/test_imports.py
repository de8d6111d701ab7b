"""Imports flow one way and never in a circle, type-only imports included (read from the AST,
nothing is imported): agents, scenarios -> judges, formats -> search -> sandbox | align -> socialign -> bench.
The simulation and the trainers are siblings: neither imports the other, also at run time."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("agents", "scenarios", "judges", "formats", "search", "sandbox", "align", "socialign", "bench")
LAYER = {"agents": 0, "scenarios": 0, "judges": 1, "formats": 1, "search": 2, "sandbox": 3, "align": 3, "socialign": 4, "bench": 5}
SIBLINGS = {("sandbox", "align"), ("align", "sandbox")}  # same layer, never an edge between them


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def our_modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}


def imported(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """Every dotted name an import statement may refer to (a module or a name inside one)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level:
            base = module.split(".")
            base = base[: len(base) - node.level + (1 if is_package else 0)]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module or ""
        return [source] + [f"{source}.{alias.name}" for alias in node.names]
    return []


def import_graph() -> nx.DiGraph:
    """module -> the modules of ours it imports anywhere (top level, functions, TYPE_CHECKING)."""
    modules = our_modules()
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            for name in imported(node, module, path.name == "__init__.py"):
                target = next((name[:i] for i in _prefix_ends(name) if name[:i] in modules), None)
                if target and target != module:
                    graph.add_edge(module, target)
    return graph


def _prefix_ends(name: str) -> list[int]:
    """End offsets of the dotted prefixes of ``name``, longest first (a.b.c, a.b, a)."""
    ends = [i for i, char in enumerate(name) if char == "."] + [len(name)]
    return sorted(ends, reverse=True)


def test_the_walk_sees_known_edges():
    graph = import_graph()
    assert graph.has_edge("sandbox.backscatter", "agents.engine")
    assert graph.has_edge("align.eval", "judges.lm")
    assert graph.has_edge("judges.lm", "agents.prompts")  # `from agents import prompts`


def test_no_import_cycles():
    graph = import_graph()
    cycles = list(nx.simple_cycles(graph))
    assert not cycles, "import cycles: " + "; ".join(" -> ".join([*c, c[0]]) for c in cycles[:5])


def test_imports_follow_the_layers():
    wrong = [
        f"{a} imports {b}"
        for a, b in import_graph().edges
        if LAYER[b.split(".")[0]] > LAYER[a.split(".")[0]]
    ]
    assert not wrong, "; ".join(wrong)


def test_the_simulation_and_the_trainers_are_siblings():
    wrong = [f"{a} imports {b}" for a, b in import_graph().edges
             if (a.split(".")[0], b.split(".")[0]) in SIBLINGS]
    assert not wrong, "; ".join(wrong)


def test_importing_every_trainer_module_loads_no_simulation_module():
    """At run time too: a trainer must not pull in the simulation through a package's __init__."""
    modules = sorted(m for m in our_modules() if m.split(".")[0] == "align")
    code = (f"import importlib, json, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'sandbox')))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(done.stdout.splitlines()[-1]) == []
