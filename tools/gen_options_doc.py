"""Write README's options table from the one definition of the pool's options.

Usage::

    python tools/gen_options_doc.py          # rewrite the table in README.md
    python tools/gen_options_doc.py --check  # fail (exit 1, with a diff) if stale

The table sits between the ``<!-- options:begin -->`` and
``<!-- options:end -->`` markers. Each row comes from
:class:`poolkeeper.PoolOptions` (``src/poolkeeper/_options.py``): the option's
name, its default (:func:`poolkeeper._options.option_default`) and the first
paragraph of its docstring, with reStructuredText literals turned into
Markdown ones.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OPTIONS = ROOT / "src" / "poolkeeper" / "_options.py"
README = ROOT / "README.md"
BEGIN = "<!-- options:begin -->"
END = "<!-- options:end -->"

#: The positional argument, described before the options.
CONNECT_ROW = (
    "| `connect` | | URL (`postgresql://`, `postgresql+psycopg2://`, "
    "`postgresql+asyncpg://`, `postgresql+aiopg://`, `mysql://`, "
    "`mysql+aiomysql://`, `mysql+mysqldb://`, `sqlite:///path`, "
    "`sqlite+aiosqlite:///path`; see docs/DRIVERS.md) or a connect callable "
    "(a coroutine function for `AsyncPool`) |"
)


def option_docs(source: str) -> list[tuple[str, str]]:
    """Return ``(name, docstring)`` for each field of ``PoolOptions`` in ``source``."""
    tree = ast.parse(source)
    cls = next(
        node
        for node in tree.body
        if isinstance(node, ast.ClassDef) and node.name == "PoolOptions"
    )
    found: list[tuple[str, str]] = []
    body = cls.body
    for i, node in enumerate(body):
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        after = body[i + 1] if i + 1 < len(body) else None
        if not (
            isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            raise SystemExit(
                f"gen_options_doc: option {node.target.id!r} has no docstring"
            )
        found.append((node.target.id, after.value.value))
    return found


def _markdown(text: str) -> str:
    first = text.strip().split("\n\n")[0]
    flat = " ".join(first.split())
    flat = re.sub(r":\w+:`~?(?:[\w.]+\.)?(\w+)`", r"`\1`", flat)
    return flat.replace("``", "`").replace("|", "\\|")


def _default(value: object) -> str:
    if isinstance(value, str):
        return f'`"{value}"`'
    return str(value)


def table() -> str:
    """Render the options table (markers included)."""
    sys.path.insert(0, str(ROOT / "src"))
    from poolkeeper._options import option_default

    rows = [BEGIN, "| argument | default | meaning |", "|---|---|---|", CONNECT_ROW]
    for name, doc in option_docs(OPTIONS.read_text()):
        rows.append(
            f"| `{name}` | {_default(option_default(name))} | {_markdown(doc)} |"
        )
    rows.append(END)
    return "\n".join(rows)


def render(readme: str) -> str:
    """Return ``readme`` with the table between the markers replaced."""
    start, end = readme.find(BEGIN), readme.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"gen_options_doc: README.md lacks {BEGIN} ... {END}")
    return readme[:start] + table() + readme[end + len(END) :]


def main(argv: list[str] | None = None) -> int:
    """Rewrite README's table, or with ``--check`` report whether it is stale."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if README is stale")
    args = parser.parse_args(argv)
    current = README.read_text()
    wanted = render(current)
    if args.check:
        if current != wanted:
            sys.stdout.writelines(
                difflib.unified_diff(
                    current.splitlines(keepends=True),
                    wanted.splitlines(keepends=True),
                    "README.md",
                    "README.md (generated)",
                )
            )
            print("README's options table is stale: run tools/gen_options_doc.py")
            return 1
        return 0
    if current != wanted:
        README.write_text(wanted)
        print("wrote README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
