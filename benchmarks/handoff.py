"""Hand-off order under contention: throughput and latency in one process.

A small model of the application benchmark (``benchmarks/apps/``) without
HTTP: ``--clients`` tasks (or threads) share a pool of ``--size`` connections
to the local PostgreSQL. Each request burns ``--work`` microseconds of CPU
(the request handling around the query), borrows a connection, runs one
``SELECT $1::int + 1`` and gives it back. The contenders run in an order
rotated each round, each for ``--seconds``; the table gives the median
requests/s, the same-round ratio to the first contender, and the p50/p99 of
a request's latency (borrow + query + return).

Contenders (asyncio, asyncpg): ``asyncpg`` (asyncpg's pool, no reset on
release), ``pk-fifo`` (``fair=True``), ``pk-unfair`` (``fair=False``),
``pk-bounded`` (``fair="bounded"``). Threads (psycopg): ``psycopg_pool``,
``pk-fifo``, ``pk-unfair``, ``pk-bounded``.

Example::

    .venv/bin/python benchmarks/handoff.py --clients 64 256 1024 --rounds 3
    .venv/bin/python benchmarks/handoff.py --threads --clients 8 32 --size 4
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import poolkeeper

DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
ASYNC = ("asyncpg", "pk-fifo", "pk-unfair", "pk-bounded")
THREADS = ("psycopg_pool", "pk-fifo", "pk-unfair", "pk-bounded")
_FAIR: dict[str, Any] = {"pk-fifo": True, "pk-unfair": False, "pk-bounded": "bounded"}


def burn(microseconds: float) -> None:
    """Spin the CPU for about ``microseconds`` (the request's own work)."""
    end = time.perf_counter() + microseconds / 1e6
    while time.perf_counter() < end:
        pass


def summarize(latencies: list[float], count: int, seconds: float) -> dict[str, float]:
    latencies.sort()
    n = len(latencies)
    return {
        "rps": count / seconds,
        "p50": latencies[n // 2] * 1000 if n else float("nan"),
        "p99": latencies[min(n - 1, int(n * 0.99))] * 1000 if n else float("nan"),
        "max": latencies[-1] * 1000 if n else float("nan"),
    }


async def run_async(
    name: str, clients: int, size: int, work: float, seconds: float
) -> dict[str, float]:
    import asyncpg

    if name == "asyncpg":

        async def no_reset(conn: Any) -> None:
            return None

        pool: Any = await asyncpg.create_pool(
            DSN, min_size=size, max_size=size, reset=no_reset
        )
        borrow = pool.acquire
    else:
        pool = poolkeeper.AsyncPool(
            DSN.replace("postgresql://", "postgresql+asyncpg://"),
            min_size=size,
            max_size=size,
            timeout=60,
            fair=_FAIR[name],
        )
        await pool.open(wait=True)
        borrow = pool.connection
    latencies: list[float] = []
    count = 0
    stop = False

    async def client(i: int) -> None:
        nonlocal count
        while not stop:
            burn(work)
            started = time.perf_counter()
            async with borrow() as conn:
                await conn.fetchval("SELECT $1::int + 1", i)
            latencies.append(time.perf_counter() - started)
            count += 1

    tasks = [asyncio.ensure_future(client(i)) for i in range(clients)]
    await asyncio.sleep(0.5)  # warm-up
    latencies.clear()
    count = 0
    await asyncio.sleep(seconds)
    result = summarize(list(latencies), count, seconds)
    stop = True
    await asyncio.gather(*tasks)
    await pool.close()
    return result


def run_threads(
    name: str, clients: int, size: int, work: float, seconds: float
) -> dict[str, float]:
    if name == "psycopg_pool":
        import psycopg_pool

        pool: Any = psycopg_pool.ConnectionPool(
            DSN, min_size=size, max_size=size, open=True
        )
        pool.wait()
        close: Callable[[], None] = pool.close
    else:
        pool = poolkeeper.Pool(
            DSN.replace("postgresql://", "postgresql+psycopg://"),
            min_size=size,
            max_size=size,
            timeout=60,
            fair=_FAIR[name],
        )
        pool.open(wait=True)
        close = pool.close
    latencies: list[float] = []
    counts = [0] * clients
    stop = threading.Event()
    measuring = threading.Event()

    def client(i: int) -> None:
        while not stop.is_set():
            burn(work)
            started = time.perf_counter()
            with pool.connection() as conn:
                conn.execute("SELECT %s::int + 1", (i,)).fetchone()
            if measuring.is_set():
                latencies.append(time.perf_counter() - started)
                counts[i] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    measuring.set()
    time.sleep(seconds)
    measuring.clear()
    result = summarize(list(latencies), sum(counts), seconds)
    stop.set()
    for thread in threads:
        thread.join()
    close()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", action="store_true", help="threads over psycopg")
    parser.add_argument("--clients", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--size", type=int, default=20)
    parser.add_argument("--work", type=float, default=200.0, help="CPU us per request")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pools", nargs="+")
    args = parser.parse_args(argv)
    names = list(args.pools or (THREADS if args.threads else ASYNC))
    print(
        f"poolkeeper {poolkeeper.__version__} build={poolkeeper.BUILD}; "
        f"{'threads' if args.threads else 'asyncio'}, pool {args.size}, "
        f"work {args.work:g} us"
    )
    for clients in args.clients:
        results: dict[str, list[dict[str, float]]] = {n: [] for n in names}
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                if args.threads:
                    res = run_threads(name, clients, args.size, args.work, args.seconds)
                else:
                    res = asyncio.run(
                        run_async(name, clients, args.size, args.work, args.seconds)
                    )
                results[name].append(res)
                print(
                    f"  round {r} clients {clients} {name:<13} {res['rps']:8.0f} req/s"
                    f"  p50 {res['p50']:7.1f} ms  p99 {res['p99']:7.1f} ms"
                    f"  max {res['max']:7.1f} ms",
                    file=sys.stderr,
                )
        base = names[0]
        print(
            f"\n| clients | pool | req/s (median) | same-round vs {base} | p50 ms | p99 ms | max ms |"
        )
        print("|---|---|---|---|---|---|---|")
        for name in names:
            rows = results[name]
            ratios = [
                row["rps"] / b["rps"]
                for row, b in zip(rows, results[base], strict=True)
            ]
            med = statistics.median
            print(
                f"| {clients} | {name} | {med(r['rps'] for r in rows):,.0f} | "
                f"{med(ratios):.2f}x | {med(r['p50'] for r in rows):.1f} | "
                f"{med(r['p99'] for r in rows):.1f} | {med(r['max'] for r in rows):.1f} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
