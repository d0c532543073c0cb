"""Clock discipline: deadlines and ages use the monotonic clock only."""

from __future__ import annotations

import ast
from pathlib import Path

import poolkeeper

SRC = Path(poolkeeper.__file__).parent


def test_no_wall_clock_in_timing_paths() -> None:
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            wall = (
                isinstance(node, ast.Attribute)
                and node.attr in {"time", "time_ns"}
                and isinstance(node.value, ast.Name)
                and node.value.id == "time"
            ) or (
                isinstance(node, ast.ImportFrom)
                and node.module == "time"
                and any(a.name in {"time", "time_ns"} for a in node.names)
            )
            if wall:
                offenders.append(
                    f"{path.relative_to(SRC)}:{getattr(node, 'lineno', 0)}"
                )
    assert not offenders, "wall-clock reads (use time.monotonic): " + ", ".join(
        offenders
    )
