"""Instructions and time per connection cycle, compiled and pure builds.

For each form (``acquire()``/``release()`` and ``with pool.connection()``,
one thread, a pool of 4 over the local PostgreSQL) and each build, this runs
the loop under ``valgrind --tool=callgrind`` twice, with a few and with many
cycles: the difference of the two instruction totals divided by the
difference of the cycle counts is the cost of one cycle, start-up and pool
opening cancelled. Then, outside valgrind, it times the loop (best of
``--repeat`` runs of ``--time-cycles``) for ns/cycle. psycopg2's
``ThreadedConnectionPool`` (getconn/putconn) is measured the same way.

The compiled build is ``.venv-compiled/`` (``scripts/test-compiled`` makes
it) or ``--compiled DIR``; the pure one is the same with ``POOLKEEPER_PURE=1``.

Example::

    .venv/bin/python benchmarks/cycle_instructions.py
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
ROOT = Path(__file__).resolve().parent.parent
FORMS = ("acquire/release", "with", "with psycopg2", "psycopg2 Threaded")
BUILDS = ("compiled", "pure")


def _loop(form: str, dsn: str, cycles: int, repeat: int) -> float:
    """Run ``cycles`` cycles ``repeat`` times; return the best ns/cycle."""
    rest = dsn.partition("://")[2]
    if form == "psycopg2 Threaded":
        import psycopg2.pool

        threaded = psycopg2.pool.ThreadedConnectionPool(4, 4, dsn)
        getconn, putconn = threaded.getconn, threaded.putconn

        def cycle_all() -> None:
            for _ in range(cycles):
                putconn(getconn())

        close: Any = threaded.closeall
    else:
        import poolkeeper

        driver = "psycopg2" if form.endswith("psycopg2") else "psycopg"
        pool: Any = poolkeeper.Pool(
            f"postgresql+{driver}://{rest}", min_size=4, max_size=4
        )
        pool.open(wait=True, timeout=30.0)
        acquire, release, connection = pool.acquire, pool.release, pool.connection

        def cycle_all() -> None:
            if form == "acquire/release":
                for _ in range(cycles):
                    release(acquire())
            else:
                for _ in range(cycles):
                    with connection():
                        pass

        close = pool.close
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter_ns()
        cycle_all()
        best = min(best, (time.perf_counter_ns() - started) / max(cycles, 1))
    close()
    return best


def _env(build: str, compiled: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("POOLKEEPER_PURE", None)
    if build == "compiled":
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [compiled, env.get("PYTHONPATH")])
        )
    else:
        env["POOLKEEPER_PURE"] = "1"
    return env


def _instructions(form: str, build: str, cycles: int, args: argparse.Namespace) -> int:
    command = [
        "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
        sys.executable, __file__, "--inner", form, "--build", build,
        "--cycles", str(cycles), "--dsn", args.dsn,
    ]  # fmt: skip
    out = subprocess.run(
        command,
        env=_env(build, args.compiled),
        capture_output=True,
        text=True,
        timeout=600,
    )
    match = re.search(r"Collected : (\d+)", out.stderr)
    if out.returncode != 0 or match is None:
        raise SystemExit(f"valgrind failed for {form} ({build}):\n{out.stderr[-2000:]}")
    return int(match.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    parser.add_argument("--compiled", default=str(ROOT / ".venv-compiled"))
    parser.add_argument("--few", type=int, default=2_000)
    parser.add_argument("--many", type=int, default=12_000)
    parser.add_argument("--time-cycles", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--time-only", action="store_true", help="skip valgrind: ns/cycle only"
    )
    parser.add_argument("--inner", help=argparse.SUPPRESS)
    parser.add_argument("--build", help=argparse.SUPPRESS)
    parser.add_argument("--cycles", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inner:
        if args.build != "-":
            import poolkeeper

            assert args.build == poolkeeper.BUILD, (poolkeeper.BUILD, args.build)
        ns = _loop(
            args.inner,
            args.dsn,
            args.cycles,
            args.repeat if args.cycles > 50_000 else 1,
        )
        print(f"{ns:.1f}")
        return 0
    timing = f"ns/cycle (best of {args.repeat} x {args.time_cycles:,})"
    print(f"| form | build | instructions/cycle | {timing} |")
    print("|---|---|---:|---:|")
    for form in FORMS:
        builds = ("-",) if form == "psycopg2 Threaded" else BUILDS
        for build in builds:
            per_cycle = float("nan")
            if not args.time_only:
                few = _instructions(form, build, args.few, args)
                many = _instructions(form, build, args.many, args)
                per_cycle = (many - few) / (args.many - args.few)
            command = [
                sys.executable, __file__, "--inner", form, "--build", build,
                "--cycles", str(args.time_cycles), "--repeat", str(args.repeat),
                "--dsn", args.dsn,
            ]  # fmt: skip
            timed = subprocess.run(
                command, env=_env(build, args.compiled), capture_output=True, text=True,
                timeout=600, check=True,
            )  # fmt: skip
            ns = float(timed.stdout.strip().splitlines()[-1])
            print(f"| {form} | {build} | {per_cycle:,.0f} | {ns:,.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
