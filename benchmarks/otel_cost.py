"""What the metrics exporters cost per connection cycle, with a query and without.

One thread (or one asyncio task) loops ``acquire()`` + ``SELECT 1`` +
``release()`` on a pool of one connection to the local PostgreSQL (psycopg
for threads, asyncpg for asyncio), and the same loop without the query (the
bare figure). Configurations, interleaved in a rotating order every round on
the same pool:

- ``none``: no exporter;
- ``prometheus``: ``poolkeeper.metrics.prometheus.register`` on a private
  registry;
- ``otel``: ``poolkeeper.metrics.otel.instrument`` (histograms on) on an SDK
  ``MeterProvider`` with an in-memory reader;
- ``both``: both at once.

The OpenTelemetry reader is collected at the end of every run and the
collection counts in the run's time, so the durations a run buffered are
recorded inside it (nothing is left for later). Prints, per target, the median
ops/s of ``none`` and the overhead of each other configuration: the median over
rounds of the ``none``/config ratio within one round.

Example::

    PYTHONPATH=src python benchmarks/otel_cost.py --rounds 7
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry

import poolkeeper
from poolkeeper.metrics import otel, prometheus

CONFIGS = ("none", "prometheus", "otel", "both")


def attach(config: str, pool: Any) -> Callable[[], None]:
    """Attach ``config``'s exporters; return what collects and detaches them."""
    done: list[Callable[[], object]] = []
    if config in ("prometheus", "both"):
        done.append(prometheus.register(pool, CollectorRegistry()).unregister)
    if config in ("otel", "both"):
        reader = InMemoryMetricReader()
        provider = MeterProvider(metric_readers=[reader])
        done.append(reader.get_metrics_data)  # records what is still buffered
        done.append(otel.instrument(pool, provider).uninstrument)
        done.append(provider.shutdown)

    def detach() -> None:
        for step in done:
            step()

    return detach


def sync_loop(pool: Any, query: bool, seconds: float) -> int:
    """Cycles done in ``seconds``."""
    acquire, release = pool.acquire, pool.release
    n = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(100):
            conn = acquire()
            if query:
                conn.execute("SELECT 1").fetchone()
            release(conn)
        n += 100
    return n


async def async_loop(pool: Any, query: bool, seconds: float) -> int:
    """Cycles done in ``seconds``."""
    acquire, release = pool.acquire, pool.release
    n = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(100):
            conn = await acquire()
            if query:
                await conn.fetchval("SELECT 1")
            await release(conn)
        n += 100
    return n


def order(r: int) -> tuple[str, ...]:
    return CONFIGS[r % len(CONFIGS) :] + CONFIGS[: r % len(CONFIGS)]


def report(target: str, result: dict[str, list[float]]) -> None:
    """One table row: ``none``'s median ops/s, the others' median overhead."""
    base = result["none"]
    cells = [f"{statistics.median(base):,.0f}"]
    for config in CONFIGS[1:]:
        ratios = [b / v for b, v in zip(base, result[config], strict=True)]
        cells.append(f"{(statistics.median(ratios) - 1) * 100:+.1f}%")
    print(f"| {target} | " + " | ".join(cells) + " |", flush=True)


def run_sync(dsn: str, rounds: int, seconds: float) -> None:
    url = dsn.replace("postgresql://", "postgresql+psycopg://", 1)
    with poolkeeper.Pool(
        url, min_size=1, max_size=1, connect_args={"autocommit": True}
    ) as pool:
        for query in (True, False):
            result: dict[str, list[float]] = {c: [] for c in CONFIGS}
            for r in range(rounds):
                for config in order(r):
                    detach = attach(config, pool)
                    started = time.perf_counter()
                    n = sync_loop(pool, query, seconds)
                    detach()  # the collection's drain counts against the run
                    result[config].append(n / (time.perf_counter() - started))
            report(f"threads, {'SELECT 1' if query else 'bare loop'}", result)


async def run_async(dsn: str, rounds: int, seconds: float) -> None:
    url = dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
    async with poolkeeper.AsyncPool(url, min_size=1, max_size=1) as pool:
        loop = asyncio.get_running_loop()
        for query in (True, False):
            result: dict[str, list[float]] = {c: [] for c in CONFIGS}
            for r in range(rounds):
                for config in order(r):
                    detach = attach(config, pool)
                    started = time.perf_counter()
                    n = await async_loop(pool, query, seconds)
                    # Exporters collect from their own thread.
                    await loop.run_in_executor(None, detach)
                    result[config].append(n / (time.perf_counter() - started))
            report(f"asyncio, {'SELECT 1' if query else 'bare loop'}", result)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else ""
    )
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=1.5, help="per run")
    parser.add_argument("--only", choices=("threads", "asyncio"))
    args = parser.parse_args(argv)
    print(
        f"poolkeeper {poolkeeper.__version__}, median of {args.rounds} rounds "
        f"x {args.seconds} s, load {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    print("| target | none (ops/s) | " + " | ".join(CONFIGS[1:]) + " |")
    print("|---|---|" + "---|" * (len(CONFIGS) - 1))
    if args.only != "asyncio":
        run_sync(args.dsn, args.rounds, args.seconds)
    if args.only != "threads":
        asyncio.run(run_async(args.dsn, args.rounds, args.seconds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
