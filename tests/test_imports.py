"""The import graph of ``roxxel`` and ``aggregator``: one shared wire layer, no cycles.

Read from the source (every ``import`` statement, at module level, in
functions and under ``TYPE_CHECKING`` alike), not from ``sys.modules``, so a
lazy import cannot hide an edge.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("roxxel", "aggregator")
# What client and collector share: frames, records, the log line, terminal
# detection, key files, the diagnostics logger, whether a pid runs, a wake-up
# pipe. They import
# nothing else of ours.
WIRE = {
    "roxxel.codec",
    "roxxel.schema",
    "roxxel.lines",
    "roxxel.terminal",
    "roxxel.security",
    "roxxel.diagnostics",
    "roxxel.pids",
    "roxxel.wakepipe",
}
# The documented reverse edge: a thread-mode collector runs in the client's process.
THREAD_MODE = ("roxxel.embedded", "aggregator")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {
        _module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")
    }


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        base = base[: -(level - 1)]
    return ".".join([*base, target] if target else base)


def _edges() -> dict[str, set[str]]:
    """Module -> the modules of ours it imports (``from pkg import mod`` counts as ``pkg.mod``)."""
    modules = _modules()
    edges: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = (
                    _resolve(name, is_package, node.level, node.module)
                    if node.level
                    else node.module or ""
                )
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                    for alias in node.names
                ]
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module":
                continue  # roxxel/__init__'s lazy names: checked as plain imports below
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges[name].add(target)
    return edges


def _package(module: str) -> str:
    return module.split(".")[0]


def test_the_collector_imports_only_the_wire_layer_of_roxxel() -> None:
    wrong = {
        (name, target)
        for name, targets in _edges().items()
        if _package(name) == "aggregator"
        for target in targets
        if _package(target) == "roxxel" and target not in WIRE
    }
    assert not wrong, f"aggregator imports client modules: {sorted(wrong)}"


def test_the_wire_layer_imports_nothing_else_of_ours() -> None:
    edges = _edges()
    wrong = {(name, target) for name in WIRE for target in edges[name] if target not in WIRE}
    assert not wrong, sorted(wrong)


def test_only_the_thread_mode_imports_the_collector_from_the_client() -> None:
    wrong = {
        (name, target)
        for name, targets in _edges().items()
        if _package(name) == "roxxel"
        for target in targets
        if _package(target) == "aggregator"
    }
    assert wrong <= {THREAD_MODE}, sorted(wrong - {THREAD_MODE})


def test_no_module_imports_itself_round_a_cycle() -> None:
    edges = _edges()
    # A package's __init__ re-exporting its modules is not a cycle of the code.
    graph = {
        name: {t for t in targets if not name.startswith(t + ".") and t not in PACKAGES}
        for name, targets in edges.items()
    }
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                cycles.append(path[path.index(target) :] + [target])
            elif target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, " ; ".join(" -> ".join(cycle) for cycle in cycles)


def test_the_graph_is_read_from_real_imports() -> None:
    """Guards the reader above: edges that exist today are found."""
    edges = _edges()
    assert "roxxel.codec" in edges["aggregator.collector"]
    assert "aggregator" in edges["roxxel.embedded"]
    assert "roxxel.schema" in edges["roxxel.codec"] or "roxxel.codec" in edges["roxxel.schema"]
