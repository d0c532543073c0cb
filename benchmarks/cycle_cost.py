"""Cost of one uncontended connection cycle, per form, driver and build.

For each form (``acquire``: ``release(acquire())``; ``with``: ``with
pool.connection(): pass``; the ``async-`` forms the same on an
:class:`~poolkeeper.AsyncPool`) and driver, one child process runs the
loop on a pool of 4 in one thread, with no query:

- ``--callgrind`` (default): instructions per cycle under ``valgrind
  --tool=callgrind``, from two runs with different cycle counts (the
  difference cancels start-up, imports and the pool's opening). Repeatable
  on a busy machine, where nanoseconds are not; blind to cache misses.
- ``--wall``: nanoseconds per cycle, the median of ``--rounds`` child runs,
  the builds and forms alternated round by round.

``--src DIR`` (repeatable, ``label=DIR``) measures other source trees beside
this one, e.g. an earlier revision from ``git archive REV src | tar -x -C
/tmp/rev``; each child imports poolkeeper from its tree only.

Examples::

    python benchmarks/cycle_cost.py
    python benchmarks/cycle_cost.py --src before=/tmp/rev/src --drivers sqlite,psycopg
    python benchmarks/cycle_cost.py --wall --rounds 9 --forms acquire,with
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DSN = "postgres@127.0.0.1:5432/test"

#: driver name -> (sync URL, async URL or None); the DSN is filled in.
URLS = {
    "sqlite": ("sqlite:///:memory:", "sqlite+aiosqlite:///:memory:"),
    "psycopg": ("postgresql+psycopg://{dsn}", "postgresql+psycopg://{dsn}"),
    "psycopg2": ("postgresql+psycopg2://{dsn}", None),
    "asyncpg": (None, "postgresql+asyncpg://{dsn}"),
}
FORMS = ("acquire", "with", "async-acquire", "async-with")

CHILD = """
import sys, time
import poolkeeper
cycles, form, url = int(sys.argv[1]), sys.argv[2], sys.argv[3]
options = dict(min_size=4, max_size=4)
if "psycopg+" in url or "+psycopg:" in url:
    options["connect_args"] = {"autocommit": True}
if form.startswith("async"):
    import asyncio

    async def main():
        pool = poolkeeper.AsyncPool(url, **options)
        await pool.open(wait=True, timeout=30)
        acquire, release, connection = pool.acquire, pool.release, pool.connection

        async def run(n):
            if form == "async-acquire":
                for _ in range(n):
                    await release(await acquire())
            else:
                for _ in range(n):
                    async with connection():
                        pass

        await run(2000)
        started = time.perf_counter()
        await run(cycles)
        elapsed = time.perf_counter() - started
        await pool.close()
        return elapsed

    elapsed = asyncio.run(main())
else:
    pool = poolkeeper.Pool(url, **options)
    pool.open(wait=True, timeout=30)
    acquire, release, connection = pool.acquire, pool.release, pool.connection

    def run(n):
        if form == "acquire":
            for _ in range(n):
                release(acquire())
        else:
            for _ in range(n):
                with connection():
                    pass

    run(2000)
    started = time.perf_counter()
    run(cycles)
    elapsed = time.perf_counter() - started
    pool.close()
print(elapsed / cycles * 1e9 if cycles else 0.0)
"""


def run_child(
    src: Path, form: str, url: str, cycles: int, callgrind: Path | None
) -> float:
    """Run one loop; return ns per cycle, or the instruction count under callgrind."""
    env = {**os.environ, "PYTHONPATH": str(src), "PYTHONHASHSEED": "0"}
    command = [sys.executable, "-c", CHILD, str(cycles), form, url]
    if callgrind is not None:
        command = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={callgrind}",
            *command,
        ]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    if callgrind is None:
        return float(proc.stdout.strip())
    match = re.search(r"Collected\s*:\s*(\d+)", proc.stderr)
    if match is None:
        raise SystemExit(f"no instruction count in valgrind output:\n{proc.stderr}")
    return float(match.group(1))


def cases(forms: list[str], drivers: list[str], dsn: str) -> list[tuple[str, str, str]]:
    """(label, form, url) for each form and driver that has a URL for it."""
    found = []
    for driver in drivers:
        sync_url, async_url = URLS[driver]
        for form in forms:
            url = async_url if form.startswith("async") else sync_url
            if url is not None:
                found.append((f"{form} {driver}", form, url.format(dsn=dsn)))
    return found


def main(argv: list[str] | None = None) -> int:
    """Measure every (build, form, driver) and print one table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wall", action="store_true", help="time ns/cycle instead")
    parser.add_argument("--rounds", type=int, default=7, help="--wall runs per case")
    parser.add_argument(
        "--cycles", type=int, default=0, help="default: 20,000 or 200,000 (--wall)"
    )
    parser.add_argument("--forms", default=",".join(FORMS))
    parser.add_argument("--drivers", default="sqlite,psycopg")
    parser.add_argument("--dsn", default=DEFAULT_DSN, help="user@host:port/db")
    parser.add_argument(
        "--src", action="append", default=[], help="label=DIR: another source tree"
    )
    parser.add_argument(
        "--skip-this", action="store_true", help="measure only the --src trees"
    )
    args = parser.parse_args(argv)
    builds = {} if args.skip_this else {"this": ROOT / "src"}
    for item in args.src:
        label, _, path = item.partition("=")
        builds[label] = Path(path).resolve()
    forms = [f for f in args.forms.split(",") if f]
    drivers = [d for d in args.drivers.split(",") if d]
    if set(forms) - set(FORMS) or set(drivers) - set(URLS):
        parser.error(f"forms: {', '.join(FORMS)}; drivers: {', '.join(URLS)}")
    todo = cases(forms, drivers, args.dsn)
    results: dict[tuple[str, str], float] = {}
    if args.wall:
        cycles = args.cycles or 200_000
        samples: dict[tuple[str, str], list[float]] = {}
        keys = [(b, c) for c in todo for b in builds]
        for round_no in range(args.rounds):
            shift = round_no % len(keys)
            for build, (label, form, url) in keys[shift:] + keys[:shift]:
                ns = run_child(builds[build], form, url, cycles, None)
                samples.setdefault((build, label), []).append(ns)
        results = {key: statistics.median(v) for key, v in samples.items()}
        unit = f"ns per cycle, median of {args.rounds} alternated runs of {cycles:,}"
    else:
        cycles = args.cycles or 20_000
        small = cycles // 4
        with tempfile.TemporaryDirectory(prefix="poolkeeper-cycle-") as tmp:
            for label, form, url in todo:
                for build, src in builds.items():
                    counts = [
                        run_child(src, form, url, n, Path(tmp) / "cg.out")
                        for n in (small, cycles)
                    ]
                    results[(build, label)] = (counts[1] - counts[0]) / (cycles - small)
        unit = f"instructions per cycle (callgrind, {small:,} vs {cycles:,} cycles)"
    print(unit)
    names = list(builds)
    print(f"{'case':28}" + "".join(f"{n:>14}" for n in names))
    for label, _, _ in todo:
        row = "".join(f"{results[(b, label)]:>14,.0f}" for b in names)
        if len(names) > 1:
            first = results[(names[0], label)]
            row += "".join(
                f"   {n} {(results[(n, label)] / first - 1) * 100:+.1f}%"
                for n in names[1:]
            )
        print(f"{label:28}{row}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
