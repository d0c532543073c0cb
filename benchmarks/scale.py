"""Scale: what one more waiter, one more connection and one more connect cost.

Three measurements:

1. **Cycle cost with many waiters.** A pool of 4 connections and ``4 + W``
   workers (asyncio tasks, or threads) looping ``acquire()`` + ``release()``
   with no query, for W = 10, 100, 1,000 and 10,000: ``W`` callers are queued
   at any time and every release hands its connection to the oldest waiter
   (``fair=True``, the default; ``fair=False`` beside it). A task yields once
   (``await asyncio.sleep(0)``) while it holds the connection: taking an idle
   connection and releasing one complete without suspending (as
   ``asyncio.Queue.get()`` does with an item ready), so without a yield one
   task would run its loop alone and nobody would ever wait.
   The figure is wall time per completed cycle (the whole process: pool,
   event loop or thread wake-up). Beside it, the same loop over the
   standard library's ``asyncio.Queue`` / ``queue.Queue`` holding 4 tokens: the
   floor of one hand-off between tasks (threads) at that many waiters. O(1)
   means the figure stays flat as W grows 1,000-fold. The connections are
   in-memory SQLite (sqlite3 for threads, aiosqlite for tasks): a cycle sends
   nothing to a server, so the pool and the scheduler are all that is timed.
2. **Memory** (``tracemalloc``, Python allocations only, so thread stacks and
   the drivers' C memory are left out): bytes per idle connection record
   (the slope between pools of 100 and 1,000 connections, the connections
   themselves allocated before the first snapshot) and bytes per waiter (W
   callers blocked in ``acquire()`` on a pool whose one connection is taken,
   minus W callers blocked on an ``asyncio.Event`` / ``threading.Event``: the
   task or thread itself is not the pool's).
3. **Opening 1,000 connections** on a private PostgreSQL 15 server the script
   starts (``initdb`` into a temporary directory, ``max_connections=1100``; as
   the ``postgres`` OS user when run as root; removed at exit): time for
   ``open(wait=True)`` of a static pool of 1,000 with ``max_connecting`` 2 and
   16, threads over psycopg 3 and asyncio over asyncpg.

Examples::

    python benchmarks/scale.py
    python benchmarks/scale.py --quick          # W up to 1,000; no private server
    python benchmarks/scale.py --only open --pool 1000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import queue
import sqlite3
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import poolkeeper

POOL_SIZE = 4
WAITERS = [10, 100, 1000, 10000]
threading.stack_size(256 * 1024)


# -- 1. cycle cost with W waiters -------------------------------------------------


async def _async_cycles(waiters: int, window: float, kind: str) -> float:
    """ns per acquire+release with ``waiters`` tasks queued (asyncio)."""
    stop = False
    counts = [0] * (POOL_SIZE + waiters)
    if kind != "queue":
        pool: Any = poolkeeper.AsyncPool(
            "sqlite+aiosqlite:///:memory:",
            min_size=POOL_SIZE,
            max_size=POOL_SIZE,
            timeout=600,
            fair=kind == "poolkeeper",
        )
        await pool.open(wait=True)

        async def worker(i: int) -> None:
            while not stop:
                conn = await pool.acquire()
                await asyncio.sleep(0)
                await pool.release(conn)
                counts[i] += 1

    else:
        tokens: asyncio.Queue[int] = asyncio.Queue()
        for t in range(POOL_SIZE):
            tokens.put_nowait(t)

        async def worker(i: int) -> None:
            while not stop:
                token = await tokens.get()
                await asyncio.sleep(0)
                tokens.put_nowait(token)
                counts[i] += 1

    tasks = [asyncio.create_task(worker(i)) for i in range(len(counts))]
    await asyncio.sleep(0.3 + waiters / 20000)  # every task queued, steady state
    start_n, start_t = sum(counts), time.perf_counter()
    await asyncio.sleep(window)
    end_n, end_t = sum(counts), time.perf_counter()
    stop = True
    await asyncio.gather(*tasks)
    if kind != "queue":
        await pool.close()
    return (end_t - start_t) / max(1, end_n - start_n) * 1e9


def _thread_cycles(waiters: int, window: float, kind: str) -> float:
    """ns per acquire+release with ``waiters`` threads queued."""
    stop = threading.Event()
    counts = [0] * (POOL_SIZE + waiters)
    if kind != "queue":
        pool: Any = poolkeeper.Pool(
            lambda: sqlite3.connect(":memory:", check_same_thread=False),
            min_size=POOL_SIZE,
            max_size=POOL_SIZE,
            timeout=600,
            fair=kind == "poolkeeper",
        )
        pool.open(wait=True)

        def worker(i: int) -> None:
            while not stop.is_set():
                conn = pool.acquire()
                pool.release(conn)
                counts[i] += 1

    else:
        tokens: queue.Queue[int] = queue.Queue()
        for t in range(POOL_SIZE):
            tokens.put(t)

        def worker(i: int) -> None:
            while not stop.is_set():
                token = tokens.get()
                tokens.put(token)
                counts[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(counts))]
    for t in threads:
        t.start()
    time.sleep(0.5 + waiters / 5000)
    start_n, start_t = sum(counts), time.perf_counter()
    time.sleep(window)
    end_n, end_t = sum(counts), time.perf_counter()
    stop.set()
    for t in threads:
        t.join()
    if kind != "queue":
        pool.close()
    return (end_t - start_t) / max(1, end_n - start_n) * 1e9


def cycles(waiter_counts: Sequence[int], window: float, rounds: int) -> None:
    print(
        f"\n### Cost per acquire + release with W waiters (pool of {POOL_SIZE}, "
        f"{window:g} s windows, median of {rounds})\n"
    )
    kinds = ("poolkeeper", "unfair", "queue")
    print(
        "| W | asyncio: poolkeeper | fair=False | asyncio.Queue "
        "| threads: poolkeeper | fair=False | queue.Queue |"
    )
    print("|---|---|---|---|---|---|---|")
    for w in waiter_counts:
        row: dict[str, list[float]] = {}
        for _ in range(rounds):
            # Interleaved: each round measures every contender at this W.
            for kind in kinds:
                row.setdefault(f"a-{kind}", []).append(
                    asyncio.run(_async_cycles(w, window, kind))
                )
            for kind in kinds:
                row.setdefault(f"t-{kind}", []).append(_thread_cycles(w, window, kind))
        med = [sorted(v)[len(v) // 2] for v in row.values()]
        print(
            f"| {w:,} | " + " | ".join(f"{m:,.0f} ns" for m in med) + " |", flush=True
        )


# -- 2. memory --------------------------------------------------------------------


def _traced(build: Callable[[], Any]) -> tuple[int, Any]:
    """Bytes ``build`` leaves allocated (Python heap), and what it returned."""
    gc.collect()
    before = tracemalloc.take_snapshot()
    kept = build()
    gc.collect()
    after = tracemalloc.take_snapshot()
    size = sum(s.size_diff for s in after.compare_to(before, "filename"))
    return size, kept


def idle_record_bytes() -> float:
    sizes = {}
    for n in (100, 1000):
        conns = [sqlite3.connect(":memory:", check_same_thread=False) for _ in range(n)]
        feed = iter(conns)

        def build(n: int = n, feed: Any = feed) -> Any:
            pool = poolkeeper.Pool(
                lambda: next(feed), min_size=n, max_size=n, max_connecting=16
            )
            pool.open(wait=True, timeout=60)
            return pool

        sizes[n], pool = _traced(build)
        assert pool.stats().idle == n
        pool.close()
        for c in conns:
            c.close()
    return (sizes[1000] - sizes[100]) / 900


async def _async_waiter_bytes(waiters: int) -> float:
    pool: Any = poolkeeper.AsyncPool(
        "sqlite+aiosqlite:///:memory:", min_size=1, max_size=1, timeout=600
    )
    await pool.open(wait=True)
    held = await pool.acquire()
    event = asyncio.Event()

    async def park_in_pool() -> None:
        try:
            conn = await pool.acquire()
            await pool.release(conn)
        except poolkeeper.PoolClosed:
            pass

    async def spawn(target: Callable[[], Any], check: Callable[[], bool]) -> Any:
        tasks = [asyncio.create_task(target()) for _ in range(waiters)]
        # Polling stats() is how a benchmark sees the waiters queue up.
        while not check():  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        return tasks

    async def measure(target: Callable[[], Any], check: Callable[[], bool]) -> int:
        gc.collect()
        before = tracemalloc.take_snapshot()
        tasks = await spawn(target, check)
        gc.collect()
        after = tracemalloc.take_snapshot()
        size = sum(s.size_diff for s in after.compare_to(before, "filename"))
        return size, tasks  # type: ignore[return-value]

    base, tasks = await measure(event.wait, lambda: True)  # type: ignore[misc]
    await asyncio.sleep(0.05)
    event.set()
    await asyncio.gather(*tasks)
    del tasks
    in_pool, tasks = await measure(  # type: ignore[misc]
        park_in_pool, lambda: pool.stats().waiting == waiters
    )
    await pool.release(held)
    await asyncio.gather(*tasks)
    await pool.close()
    return (in_pool - base) / waiters


def thread_waiter_bytes(waiters: int) -> float:
    pool = poolkeeper.Pool(
        lambda: sqlite3.connect(":memory:", check_same_thread=False),
        min_size=1,
        max_size=1,
        timeout=600,
    )
    pool.open(wait=True)
    held = pool.acquire()
    event = threading.Event()

    def park_in_pool() -> None:
        conn = pool.acquire()
        pool.release(conn)

    def measure(target: Callable[[], Any], check: Callable[[], bool]) -> Any:
        gc.collect()
        before = tracemalloc.take_snapshot()
        threads = [threading.Thread(target=target) for _ in range(waiters)]
        for t in threads:
            t.start()
        while not check():
            time.sleep(0.01)
        time.sleep(0.1)
        gc.collect()
        after = tracemalloc.take_snapshot()
        return sum(s.size_diff for s in after.compare_to(before, "filename")), threads

    base, threads = measure(event.wait, lambda: True)
    event.set()
    for t in threads:
        t.join()
    del threads
    in_pool, threads = measure(park_in_pool, lambda: pool.stats().waiting == waiters)
    pool.release(held)
    for t in threads:
        t.join()
    pool.close()
    return float(in_pool - base) / waiters


def memory(quick: bool) -> None:
    tracemalloc.start()
    try:
        record = idle_record_bytes()
        w_async = asyncio.run(_async_waiter_bytes(1000 if quick else 10000))
        w_thread = thread_waiter_bytes(200 if quick else 1000)
    finally:
        tracemalloc.stop()
    print("\n### Memory (tracemalloc, Python heap)\n")
    print("| what | bytes each |")
    print("|---|---|")
    print(
        f"| idle connection record (pool of 1,000 minus pool of 100, / 900) | {record:,.0f} |"
    )
    print(
        f"| waiting task (in acquire(), minus a task awaiting an Event) | {w_async:,.0f} |"
    )
    print(
        f"| waiting thread (in acquire(), minus a thread waiting on an Event) | {w_thread:,.0f} |"
    )


# -- 3. opening 1,000 connections on a private server -------------------------------


def open_times(size: int, rounds: int) -> None:
    from tests.support.pgcluster import PgCluster, pg_available

    reason = pg_available()
    if reason is not None:
        print(f"\n(open-time measurement skipped: {reason})")
        return
    settings = {
        "shared_buffers": "128MB",
        "log_connections": "off",
        "max_wal_senders": 0,
    }
    with PgCluster(max_connections=size + 100, settings=settings) as cluster:
        cluster.start()
        url = cluster.url(dbname="postgres")
        print(
            f"\n### Opening a static pool of {size:,} (private PostgreSQL 15, "
            f"max_connections={size + 100}; median of {rounds}, seconds)\n"
        )
        print("| pool | max_connecting=2 | max_connecting=16 | 16 vs 2 |")
        print("|---|---|---|---|")
        for label, is_async in (
            ("Pool (psycopg 3, threads)", False),
            ("AsyncPool (asyncpg)", True),
        ):
            times: dict[int, list[float]] = {2: [], 16: []}
            for _ in range(rounds):
                for mc in (2, 16):
                    times[mc].append(_open_once(url, size, mc, is_async))
            med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
            print(
                f"| {label} | {med[2]:.2f} | {med[16]:.2f} | {med[2] / med[16]:.1f}x faster |",
                flush=True,
            )


def _open_once(url: str, size: int, max_connecting: int, is_async: bool) -> float:
    opts: dict[str, Any] = {
        "min_size": size,
        "max_size": size,
        "max_connecting": max_connecting,
        "timeout": 300,
    }
    if is_async:

        async def go() -> float:
            pool = poolkeeper.AsyncPool(
                url.replace("postgresql://", "postgresql+asyncpg://"), **opts
            )
            start = time.perf_counter()
            await pool.open(wait=True)
            took = time.perf_counter() - start
            assert pool.stats().size == size
            await pool.close()
            return took

        return asyncio.run(go())
    pool = poolkeeper.Pool(
        url.replace("postgresql://", "postgresql+psycopg://"), **opts
    )
    start = time.perf_counter()
    pool.open(wait=True)
    took = time.perf_counter() - start
    assert pool.stats().size == size
    pool.close()
    return took


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else ""
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=("cycles", "memory", "open"),
        default=["cycles", "memory", "open"],
    )
    parser.add_argument("--waiters", nargs="+", type=int, default=WAITERS)
    parser.add_argument(
        "--window", type=float, default=1.0, help="seconds measured per cycle figure"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--pool",
        type=int,
        default=1000,
        help="size of the pool opened on the private server",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="W up to 1,000, one round, no private server",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.waiters = [w for w in args.waiters if w <= 1000]
        args.rounds = 1
        args.only = [o for o in args.only if o != "open"]
    with open("/proc/loadavg") as f:
        print(
            f"poolkeeper {poolkeeper.__version__}, Python {sys.version.split()[0]}, load {' '.join(f.read().split()[:3])}"
        )
    if "cycles" in args.only:
        cycles(args.waiters, args.window, args.rounds)
    if "memory" in args.only:
        memory(args.quick)
    if "open" in args.only:
        open_times(args.pool, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
