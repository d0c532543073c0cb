"""Fail on any import cycle between modules of ``src/poolkeeper``.

Builds the module import graph with :mod:`ast` and counts every import:
top-level ones, those under ``if TYPE_CHECKING:`` and those inside functions,
because each of them ties the two modules together for a reader and for mypy.
A package's ``__init__`` counts as the package itself.

Usage::

    python tools/check_imports.py                # fail on any cycle not allowed
    python tools/check_imports.py --allow FILE   # default: tools/import_cycles_allowed.txt

The allowlist names known cycles, one per line as ``a -> b -> a`` (module names
without the ``poolkeeper.`` prefix). It may only shrink: a listed cycle that
no longer exists also fails the run, so the entry gets deleted.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
PACKAGE = "poolkeeper"
DEFAULT_ALLOW = ROOT / "tools" / "import_cycles_allowed.txt"


def module_name(path: Path) -> str:
    """Return the dotted module name of ``path`` (a package is its ``__init__``)."""
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def resolve(current: str, is_package: bool, node: ast.ImportFrom) -> str:
    """Return the absolute module named by a ``from ... import`` statement."""
    if node.level == 0:
        return node.module or ""
    base = current.split(".")
    if not is_package:
        base = base[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """Return the modules of the package that ``path`` imports, anywhere in it."""
    current = module_name(path)
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = resolve(current, is_package, node)
            # ``from pkg import mod`` imports the submodule when there is one.
            names = [
                f"{target}.{alias.name}"
                if f"{target}.{alias.name}" in modules
                else target
                for alias in node.names
            ]
        else:
            continue
        for name in names:
            # ``import a.b.c`` binds through ``a.b.c``; keep the deepest known module.
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != current:
                found.add(name)
    return found


def build_graph() -> dict[str, set[str]]:
    """Return ``{module: modules it imports}`` for every module of the package."""
    paths = sorted((SRC / PACKAGE).rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imports_of(p, modules) for p in paths}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Return one elementary cycle per strongly connected component's edge set.

    Each cycle is listed from its smallest module name. For a component with
    several cycles, the shortest cycle through each of its edges is reported,
    so every circular dependency shows up at least once.
    """
    cycles: set[tuple[str, ...]] = set()
    for component in strongly_connected(graph):
        if len(component) < 2:
            continue
        for src in sorted(component):
            for dst in sorted(graph[src] & component):
                path = shortest_path(graph, dst, src, component)
                cycle = [src, *path[:-1]] if path else [src]
                start = cycle.index(min(cycle))
                cycles.add(tuple(cycle[start:] + cycle[:start]))
    return [list(c) for c in sorted(cycles)]


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Return the strongly connected components of ``graph`` (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    result: list[set[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    result.append(component)
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return result


def shortest_path(
    graph: dict[str, set[str]], start: str, goal: str, within: set[str]
) -> list[str]:
    """Return the shortest path ``start .. goal`` inside ``within`` (BFS)."""
    previous: dict[str, str | None] = {start: None}
    queue = [start]
    for node in queue:
        if node == goal:
            break
        for nxt in sorted(graph[node] & within):
            if nxt not in previous:
                previous[nxt] = node
                queue.append(nxt)
    path: list[str] = []
    step: str | None = goal
    while step is not None:
        path.append(step)
        step = previous.get(step)
    return path[::-1]


def short(name: str) -> str:
    """Drop the package prefix for display and for the allowlist."""
    return name.removeprefix(PACKAGE + ".")


def load_allowed(path: Path) -> set[str]:
    """Return the cycles listed in the allowlist file (blank lines, # comments skipped)."""
    if not path.exists():
        return set()
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return {line for line in lines if line}


def main(argv: list[str] | None = None) -> int:
    """Print every import cycle; return 1 if one is not allowed or an allowed one is gone."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--allow", type=Path, default=DEFAULT_ALLOW)
    args = parser.parse_args(argv)
    allowed = load_allowed(args.allow)
    found = {
        " -> ".join(short(m) for m in [*cycle, cycle[0]])
        for cycle in find_cycles(build_graph())
    }
    new = sorted(found - allowed)
    gone = sorted(allowed - found)
    for line in new:
        print(f"import cycle: {line}")
    for line in gone:
        print(
            f"allowed cycle no longer exists, delete it from {args.allow.name}: {line}"
        )
    known = sorted(found & allowed)
    if known:
        print(f"{len(known)} known cycle(s) still allowed in {args.allow.name}")
    if new or gone:
        return 1
    print("no import cycles" if not found else "no new import cycles")
    return 0


if __name__ == "__main__":
    sys.exit(main())
