"""The package's layers (docs/ARCHITECTURE.md), read from the source: each
folder imports only from the layers below it (and its own), no module
imports another in a cycle, nothing imports inside a function to dodge one,
one module imports bcc, and no module outgrows ~500 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "pyprobe"
# Bottom to top. A layer may import any layer before it in this list, and
# itself; those on one line know nothing of each other.
LAYERS = [
    ("",),  # pyprobe/__init__.py, errors.py, paths.py, logs.py: the base
    ("kernel",),
    ("load",),
    ("netns",),
    ("core",),
    ("probes",),
    ("views",),
    ("exporter", "lab"),
    ("cli",),
]
RANK = {layer: rank for rank, names in enumerate(LAYERS) for layer in names}
# Imports inside a function, and why each is allowed: a costly optional
# dependency loaded when first used, never a cycle dodged.
DEFERRED = {("load.bcc", "bcc")}  # clang and LLVM (~100 MB): only where a program is compiled
MAX_LINES = 500


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def layer(module: str) -> str:
    head = module.split(".")[0]
    return head if "." in module or head in RANK else ""


def imports(module: str, path: Path) -> list[tuple[str, bool]]:
    """(imported pyprobe module, whether inside a function) for every import."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: list[tuple[str, bool]] = []

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".") if package else []
                    base = base[: len(base) - child.level + 1] if child.level > 1 else base
                    target = ".".join([*base, *(child.module.split(".") if child.module else [])])
                    for alias in child.names:
                        full = f"{target}.{alias.name}" if target else alias.name
                        out.append((full if full in known else target, inner))
                elif child.module and child.module.split(".")[0] in ("pyprobe", "bcc"):
                    name = child.module.removeprefix("pyprobe").lstrip(".")
                    out.append((name if child.module != "bcc" else "bcc", inner))
                else:
                    out.append((f"<{child.module}>", inner))
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    name = alias.name
                    out.append(("bcc" if name.split(".")[0] == "bcc" else f"<{name}>", inner))
            visit(child, inner)

    known = set(modules())
    visit(tree, False)
    return out


def graph() -> dict[str, set[str]]:
    known = modules()
    return {m: {t for t, _ in imports(m, p) if t in known and t != m} for m, p in known.items()}


def test_each_layer_imports_only_downward():
    wrong = []
    for module, targets in graph().items():
        for target in targets:
            mine, theirs = layer(module), layer(target)
            if mine == theirs:
                continue
            if RANK[theirs] >= RANK[mine]:
                wrong.append(f"{module} -> {target}")
    assert wrong == []


def test_no_import_cycle():
    edges = graph()
    state: dict[str, int] = {}  # 1 visiting, 2 done
    cycles = []

    def walk(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*trail[trail.index(nxt) :], nxt]))
            elif nxt not in state:
                walk(nxt, [*trail, nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            walk(node, [node])
    assert cycles == []


def test_no_import_hides_inside_a_function():
    hidden = [
        (module, target)
        for module, path in modules().items()
        for target, nested in imports(module, path)
        if nested and (module, target) not in DEFERRED
    ]
    assert hidden == []


def test_one_module_imports_bcc():
    importers = {m for m, p in modules().items() if any(t == "bcc" for t, _ in imports(m, p))}
    assert importers == {"load.bcc"}


@pytest.mark.parametrize("module", sorted(modules()))
def test_no_module_over_500_lines(module):
    assert len(modules()[module].read_text().splitlines()) <= MAX_LINES


def test_the_walk_sees_the_package():
    """A guard on the guards: the graph has the layers' modules and edges."""
    edges = graph()
    assert {"cli", "core.probe", "load.bcc", "kernel.env", "probes"} <= set(edges)
    assert "core.series" in edges["core.probe"] and "load.program" in edges["core.probe"]
    assert all(layer(m) in RANK for m in edges)
