"""Instructions per checkout cycle of two source trees, under callgrind.

Answers "did this change slow the steady-state hot path?" for a change that
should not have: the same loop (one thread, ``max_size=1``, acquire +
release, and ``with pool.connection()``) runs against ``--base`` (another
tree's ``src``, e.g. ``git archive main src | tar -x -C /tmp/base``) and
this tree's ``src``, in child processes under ``valgrind --tool=callgrind``,
each at two cycle counts so that start-up and imports cancel out.

Examples::

    git archive main src | tar -x -C /tmp/base
    python benchmarks/ab_hotpath.py --base /tmp/base/src
    python benchmarks/ab_hotpath.py --base /tmp/base/src \\
        --url 'postgresql+psycopg2://postgres@127.0.0.1:5432/test?target_session_attrs=read-write'
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import sys
import poolkeeper
url, mode, cycles = sys.argv[1], sys.argv[2], int(sys.argv[3])
pool = poolkeeper.Pool(url, min_size=1, max_size=1)
with pool:
    conn = pool.acquire()
    pool.release(conn)
    if mode == "acquire":
        for _ in range(cycles):
            conn = pool.acquire()
            pool.release(conn)
    else:
        for _ in range(cycles):
            with pool.connection():
                pass
"""


def instructions(src: Path, url: str, mode: str, cycles: int) -> int:
    """Total instructions of one child run under callgrind."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cg.out"
        env = {**os.environ, "PYTHONPATH": str(src)}
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                sys.executable,
                "-c",
                CHILD,
                url,
                mode,
                str(cycles),
            ],
            env=env,
            check=True,
            capture_output=True,
        )
        text = out.read_text()
    match = re.search(r"^(?:summary|totals): (\d+)", text, re.MULTILINE)
    if match is None:
        raise RuntimeError("no instruction total in callgrind's output")
    return int(match.group(1))


def per_cycle(src: Path, url: str, mode: str, low: int, high: int) -> float:
    """Instructions per cycle: the difference of two runs over their cycle difference."""
    return (instructions(src, url, mode, high) - instructions(src, url, mode, low)) / (
        high - low
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True, help="the other src tree")
    parser.add_argument("--url", default="sqlite:///:memory:")
    parser.add_argument("--low", type=int, default=2000)
    parser.add_argument("--high", type=int, default=12000)
    args = parser.parse_args()
    for mode in ("acquire", "connection"):
        base = per_cycle(args.base, args.url, mode, args.low, args.high)
        here = per_cycle(ROOT / "src", args.url, mode, args.low, args.high)
        print(
            f"{mode:10s} base {base:9.0f}  this tree {here:9.0f}  "
            f"ratio {here / base:.3f}"
        )


if __name__ == "__main__":
    main()
