"""The package's layering, checked from its own imports (module level and inside functions alike).

Every import runs downward: a module imports only modules of a lower layer, or of its own layer
without forming a cycle.  Façades (one per AWS resource family) do not import one another, so
whatever two operations share lives in an effect below both.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "fleetjobs"

# (module prefix, layer); the longest matching prefix wins.  Lower numbers are lower layers.
LAYERS: list[tuple[str, int]] = [
    ("fleetjobs", 0),
    ("fleetjobs.domain", 0),
    ("fleetjobs.clock", 0),
    ("fleetjobs.config", 0),
    ("fleetjobs.store", 1),
    ("fleetjobs.model", 1),
    ("fleetjobs.security", 2),
    ("fleetjobs.artifacts", 2),
    ("fleetjobs.device", 2),
    ("fleetjobs.service", 3),  # context, events, pagination, throttle: what every service needs
    ("fleetjobs.service.effects", 4),
    ("fleetjobs.service.loops", 6),
    ("fleetjobs.api", 7),
    ("fleetjobs.mqtt", 7),
    ("fleetjobs.agent", 7),
    ("fleetjobs.simulate", 7),
    ("fleetjobs.server", 8),
    ("fleetjobs.supervisor", 9),
    ("fleetjobs.cli", 9),
    ("fleetjobs.__main__", 9),
]
SERVICE_BASE = {"context", "events", "pagination", "throttle"}
FACADE = 5


def modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if ".migrations." not in name + ".":
            found[name] = path
    return found


def layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 3 and parts[1] == "service" and parts[2] not in SERVICE_BASE | {"effects", "loops"}:
        return FACADE
    best = max((p for p, _ in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return dict(LAYERS)[best]


def imports() -> dict[str, set[str]]:
    mods = modules()
    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{name}: the project uses absolute imports only"
                base = node.module or ""
                if not base.startswith("fleetjobs"):
                    continue
                for alias in node.names:
                    target = f"{base}.{alias.name}"
                    edges[name].add(target if target in mods else base)
            elif isinstance(node, ast.Import):
                edges[name].update(a.name for a in node.names if a.name.startswith("fleetjobs"))
    return edges


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    return [
        f"{src} (layer {layer(src)}) imports {dst} (layer {layer(dst)})"
        for src, targets in edges.items()
        for dst in targets
        if layer(dst) > layer(src)
    ]


def cycles_of(edges: dict[str, set[str]]) -> list[list[str]]:
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module)
    return cycles


def test_every_import_runs_downward() -> None:
    assert upward_imports(imports()) == []


def test_facades_do_not_import_one_another() -> None:
    between = [
        f"{src} imports {dst}"
        for src, targets in imports().items()
        for dst in targets
        if layer(src) == FACADE and layer(dst) == FACADE and src != dst
    ]
    assert between == []


def test_no_import_cycles() -> None:
    assert cycles_of(imports()) == []


def test_the_checks_can_fail() -> None:
    """A cycle and an upward import in a made-up graph are found; the real graph is read."""
    made_up = {
        "fleetjobs.service.effects.a": {"fleetjobs.service.effects.b"},
        "fleetjobs.service.effects.b": {"fleetjobs.service.effects.a", "fleetjobs.service.jobs"},
    }
    assert cycles_of(made_up) == [
        ["fleetjobs.service.effects.a", "fleetjobs.service.effects.b", "fleetjobs.service.effects.a"]
    ]
    assert upward_imports(made_up) == ["fleetjobs.service.effects.b (layer 4) imports fleetjobs.service.jobs (layer 5)"]
    edges = imports()
    assert "fleetjobs.service.effects.notices" in edges["fleetjobs.service.effects.outcomes"]
    assert "fleetjobs.store.tables" in edges["fleetjobs.service.jobs"]
    assert layer("fleetjobs.domain.timers") < layer("fleetjobs.store.tables") < layer("fleetjobs.api.app")
