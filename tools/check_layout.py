"""Check the size rules of docs/ARCHITECTURE.md: small modules, short functions.

Usage::

    python tools/check_layout.py             # check src/ (generated twins included)
    python tools/check_layout.py --top 5     # also list the five largest modules

Rules: no module under ``src/`` over :data:`MAX_MODULE_LINES` lines; no
function or method over :data:`MAX_FUNCTION_LINES` lines (counted with
``ast``, from its ``def`` line, decorators excluded, to its last line,
docstring included). Exits 1 and names each offender.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80
#: Modules allowed to break the rules for now, each with the work that fixes
#: it. An entry whose module passes is an error, so the list cannot go stale.
PENDING: dict[str, str] = {}


def module_lines(path: Path) -> int:
    """Return the number of lines of ``path``."""
    return len(path.read_text().splitlines())


def long_functions(path: Path, limit: int) -> list[tuple[str, int, int]]:
    """Return ``(qualified name, line, length)`` of each function over ``limit`` lines."""
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[str, int, int]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = prefix
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                length = (child.end_lineno or child.lineno) - child.lineno + 1
                if length > limit:
                    found.append((name, child.lineno, length))
                name += "."
            elif isinstance(child, ast.ClassDef):
                name = f"{prefix}{child.name}."
            visit(child, name)

    visit(tree, "")
    return found


def main(argv: list[str] | None = None) -> int:
    """Check every module under ``src/``; print offenders, return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=0, help="list the N largest modules")
    parser.add_argument("--max-module", type=int, default=MAX_MODULE_LINES)
    parser.add_argument("--max-function", type=int, default=MAX_FUNCTION_LINES)
    args = parser.parse_args(argv)
    sizes: list[tuple[int, str]] = []
    problems: list[str] = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        lines = module_lines(path)
        sizes.append((lines, rel))
        found = [f"{rel}: {lines} lines (max {args.max_module})"]
        if lines <= args.max_module:
            found.clear()
        for name, lineno, length in long_functions(path, args.max_function):
            found.append(
                f"{rel}:{lineno}: {name} is {length} lines (max {args.max_function})"
            )
        if rel not in PENDING:
            problems.extend(found)
        elif found:
            print(f"pending ({PENDING[rel]}): " + "; ".join(found))
        else:
            problems.append(f"{rel} passes now: remove it from PENDING")
    seen = {rel for _, rel in sizes}
    problems.extend(
        f"{rel} is gone: remove it from PENDING" for rel in PENDING if rel not in seen
    )
    for lines, rel in sorted(sizes, reverse=True)[: args.top]:
        print(f"{lines:6d}  {rel}")
    for problem in problems:
        print(problem)
    if problems:
        print(f"check_layout: {len(problems)} problem(s)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
