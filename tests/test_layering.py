import subprocess
import sys

from conftest import ROOT


def test_the_model_never_imports_the_ui():
    code = (
        "import pkgutil, importlib, sys, iovtui.sim\n"
        "for m in pkgutil.walk_packages(iovtui.sim.__path__, 'iovtui.sim.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('textual', 'rich')]\n"
        "print(len([m for m in sys.modules if m.startswith('iovtui.sim')]), bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    assert int(p.stdout.split()[0]) >= 15


# -- no import circles ---------------------------------------------------------------
import ast  # noqa: E402
from pathlib import Path  # noqa: E402

PKG = Path(ROOT) / "iovtui"


def _modules() -> dict[str, Path]:
    """Every module of iovtui/ by dotted name (a package by its __init__)."""
    mods = {}
    for f in sorted(PKG.rglob("*.py")):
        parts = list(f.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = f
    return mods


def import_graph() -> dict[str, set[str]]:
    """module -> the iovtui modules it imports, read from every import
    statement in the file (top level, inside functions, under TYPE_CHECKING,
    in try blocks: all of them), without running anything.  ``from X import
    Y`` is an edge to X, and to X.Y as well when Y is a module."""
    mods = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        is_pkg = path.name == "__init__.py"
        here = name.split(".") if is_pkg else name.split(".")[:-1]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
                for t in targets:
                    # `import a.b.c` runs a, a.b and a.b.c; the edge that matters is a.b.c
                    if t in mods:
                        edges.add(t)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here[:len(here) - (node.level - 1)] if node.level > 1 else here
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target in mods:
                    edges.add(target)
                for a in node.names:
                    sub = f"{target}.{a.name}"
                    if sub in mods:
                        edges.add(sub)
        edges.discard(name)
        graph[name] = edges
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[tuple[list[str], set[str]]]:
    """Each strongly connected component of more than one module (Tarjan):
    a shortest cycle through it, and all its modules; shortest first."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    comps: list[set[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    cycles = []
    for comp in comps:
        # a shortest cycle through the component's first module (breadth first)
        start = min(comp)
        prev: dict[str, str] = {}
        frontier = [start]
        found = None
        while frontier and found is None:
            nxt = []
            for v in frontier:
                for w in sorted(graph[v] & comp):
                    if w == start:
                        found = v
                        break
                    if w not in prev:
                        prev[w] = v
                        nxt.append(w)
                if found:
                    break
            frontier = nxt
        path = [found]
        while path[-1] != start:
            path.append(prev[path[-1]])
        cycles.append((path[::-1] + [start], comp))
    return sorted(cycles, key=lambda c: len(c[0]))


def test_the_import_graph_is_read_from_every_import_statement():
    g = import_graph()
    assert "iovtui.sim.engine" in g["iovtui.sim.world"]              # top level, relative
    assert "iovtui.sim.paths" in g["iovtui.sim.world"]               # inside a function or at the top
    assert "iovtui.serve" in g["iovtui.cli"]                         # `from . import serve`
    assert "iovtui.sim.paths.base" in g["iovtui.sim.paths.virtio"]   # `from .base import …`
    assert "iovtui.sim.vmm" in g["iovtui.sim.paths.base"]            # under TYPE_CHECKING
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [(["a", "b", "c", "a"], {"a", "b", "c"})]


def test_no_import_circles_in_iovtui():
    cycles = find_cycles(import_graph())
    assert not cycles, "import circles: " + "; ".join(
        " → ".join(c) + (f" (one circle among {', '.join(sorted(comp))})" if len(comp) > len(c) - 1 else "")
        for c, comp in cycles)
