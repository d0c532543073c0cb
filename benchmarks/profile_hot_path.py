"""Profile poolkeeper's checkout/checkin hot path with cProfile, one thread.

Companion of ``bench_pools.py``: where that one says *how fast*, this one says
*where the time goes*. It runs N uncontended cycles of one form in the main
thread (cProfile only sees the thread it runs in) and prints the functions
with the most own time, plus the cost per cycle with and without the profiler.

Examples::

    python benchmarks/profile_hot_path.py sync-with
    python benchmarks/profile_hot_path.py async-asyncpg --cycles 100000 --top 25
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import poolkeeper

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
FORMS = ("sync-with", "sync-acquire", "async-asyncpg", "async-psycopg")


def _url(dsn: str, driver: str) -> str:
    return "postgresql+" + driver + "://" + dsn.partition("://")[2]


def _sync_loop(dsn: str, form: str, cycles: int, stmt: bool) -> Callable[[], None]:
    pool: Any = poolkeeper.Pool(
        _url(dsn, "psycopg"), min_size=4, max_size=4, connect_args={"autocommit": True}
    )
    pool.open(wait=True, timeout=30.0)

    def with_form() -> None:
        for _ in range(cycles):
            with pool.connection() as conn:
                if stmt:
                    conn.execute("SELECT 1").fetchone()

    def acquire_form() -> None:
        for _ in range(cycles):
            conn = pool.acquire()
            if stmt:
                conn.execute("SELECT 1").fetchone()
            pool.release(conn)

    return with_form if form == "sync-with" else acquire_form


def _async_loop(dsn: str, form: str, cycles: int, stmt: bool) -> Callable[[], None]:
    driver = "asyncpg" if form == "async-asyncpg" else "psycopg"
    kwargs: dict[str, Any] = {"min_size": 4, "max_size": 4}
    if driver == "psycopg":
        kwargs["connect_args"] = {"autocommit": True}

    async def body() -> None:
        pool: Any = poolkeeper.AsyncPool(_url(dsn, driver), **kwargs)
        await pool.open(wait=True, timeout=30.0)
        try:
            for _ in range(cycles):
                async with pool.connection() as conn:
                    if stmt and driver == "asyncpg":
                        await conn.fetchval("SELECT 1")
                    elif stmt:
                        await (await conn.execute("SELECT 1")).fetchone()
        finally:
            await pool.close()

    return lambda: asyncio.run(body())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("form", choices=FORMS)
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    parser.add_argument("--cycles", type=int, default=200_000)
    parser.add_argument(
        "--stmt", action="store_true", help="run SELECT 1 in each cycle"
    )
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args(argv)
    build = _sync_loop if args.form.startswith("sync") else _async_loop
    # Plain run first (also a warm-up), then the profiled one.
    started = time.perf_counter()
    build(args.dsn, args.form, args.cycles, args.stmt)()
    plain = time.perf_counter() - started
    profiler = cProfile.Profile()
    run = build(args.dsn, args.form, args.cycles, args.stmt)
    started = time.perf_counter()
    profiler.runcall(run)
    profiled = time.perf_counter() - started
    print(
        f"{args.form}{' +stmt' if args.stmt else ''}: {args.cycles:,} cycles, "
        f"{plain / args.cycles * 1e6:.2f} us/cycle plain, "
        f"{profiled / args.cycles * 1e6:.2f} us/cycle under cProfile "
        "(includes pool open/close)"
    )
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(args.top)
    print(out.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
