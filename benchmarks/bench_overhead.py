"""Measure what observability costs on the acquire/release hot path.

One thread (or one task) checks a connection out and back in, in a tight loop,
on a pool with ``max_size=1``. The same pool is measured under several
configurations, attached and detached between runs:

- ``none``: no listener, no exporter (the default);
- ``noop``: one no-op listener on ``checkout`` and ``checkin`` (the price of
  the event machinery itself: building a ``PoolEvent`` and calling listeners);
- ``prometheus``: ``poolkeeper.metrics.prometheus.register`` on a private
  registry;
- ``otel``: ``poolkeeper.metrics.otel.instrument`` on an SDK ``MeterProvider``
  with an in-memory reader;
- ``otel-nohist``: the same with ``histograms=False`` (observable instruments
  only, no listener);
- ``both``: both exporters at once.

Runs are interleaved (every configuration once per round, in a rotating
order) so drift in machine speed hits all of them alike; the table reports
the median ops/s over the rounds and the overhead against ``none``.

The last lines estimate the no-listener path directly (the shells test one
listener list per potential event; the script times those tests against a
full cycle). For a measured comparison against a build with the event guards
and hot-path stats removed, see ``bench_baseline.py``.

Examples::

    python benchmarks/bench_overhead.py
    python benchmarks/bench_overhead.py --targets sqlite,postgres --rounds 11
    python benchmarks/bench_overhead.py --query     # with a SELECT 1 per cycle
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import timeit
from collections.abc import Callable
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry

import poolkeeper
from poolkeeper import PoolEvent
from poolkeeper._core.events import EventBus
from poolkeeper.metrics import otel, prometheus

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
CONFIGS = ("none", "noop", "prometheus", "otel", "otel-nohist", "both")
TARGETS = ("sqlite", "postgres", "async-sqlite", "async-postgres")
Detach = Callable[[], None]


def _noop(event: PoolEvent) -> None:
    pass


def attach(config: str, pool: Any, provider: MeterProvider) -> Detach:
    """Attach ``config``'s listeners/exporters to ``pool``; return the detacher."""
    if config == "none":
        return lambda: None
    if config == "noop":
        pool.on("checkout", _noop)
        pool.on("checkin", _noop)

        def detach() -> None:
            pool.off("checkout", _noop)
            pool.off("checkin", _noop)

        return detach
    handles: list[Detach] = []
    if config in ("prometheus", "both"):
        handles.append(prometheus.register(pool, CollectorRegistry()).unregister)
    if config in ("otel", "both"):
        handles.append(otel.instrument(pool, provider).uninstrument)
    if config == "otel-nohist":
        handles.append(otel.instrument(pool, provider, histograms=False).uninstrument)

    def detach_all() -> None:
        for handle in handles:
            handle()

    return detach_all


def sync_runner(pool: Any, query: bool) -> Callable[[int], float]:
    """Return ``run(cycles) -> ops/s`` for a sync pool."""
    acquire, release = pool.acquire, pool.release

    def run(cycles: int) -> float:
        started = time.perf_counter()
        for _ in range(cycles):
            conn = acquire()
            if query:
                conn.execute("SELECT 1").fetchone()
            release(conn)
        return cycles / (time.perf_counter() - started)

    return run


def async_runner(
    pool: Any, query: bool, loop: asyncio.AbstractEventLoop
) -> Callable[[int], float]:
    """Return ``run(cycles) -> ops/s`` for an async pool, timed inside the loop."""
    acquire, release = pool.acquire, pool.release

    async def cycle_all(cycles: int) -> float:
        started = time.perf_counter()
        for _ in range(cycles):
            conn = await acquire()
            if query:
                await _async_query(conn)
            await release(conn)
        return cycles / (time.perf_counter() - started)

    def run(cycles: int) -> float:
        return loop.run_until_complete(cycle_all(cycles))

    return run


async def _async_query(conn: Any) -> None:
    if hasattr(conn, "fetchval"):  # asyncpg
        await conn.fetchval("SELECT 1")
    else:  # aiosqlite
        cursor = await conn.execute("SELECT 1")
        await cursor.fetchone()
        await cursor.close()


def measure(
    target: str,
    run: Callable[[int], float],
    pool: Any,
    cycles: int,
    rounds: int,
) -> dict[str, float]:
    """Interleave every configuration ``rounds`` times; return median ops/s each."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    results: dict[str, list[float]] = {config: [] for config in CONFIGS}
    run(cycles // 2)  # warm-up
    try:
        for round_no in range(rounds):
            shift = round_no % len(CONFIGS)
            for config in CONFIGS[shift:] + CONFIGS[:shift]:
                detach = attach(config, pool, provider)
                try:
                    results[config].append(run(cycles))
                finally:
                    detach()
            print(f"  {target}: round {round_no + 1}/{rounds}", file=sys.stderr)
        # Collect once so the OTel instruments are known to have worked.
        reader.get_metrics_data()
    finally:
        provider.shutdown()
    return {config: statistics.median(values) for config, values in results.items()}


def guard_cost() -> float:
    """Seconds the no-listener path spends per cycle testing two empty lists."""
    bus = EventBus()
    number = 1_000_000
    with_guards = timeit.timeit(
        "if bus.checkout: pass\nif bus.checkin: pass",
        globals={"bus": bus},
        number=number,
    )
    empty = timeit.timeit("pass", number=number)
    return max(with_guards - empty, 0.0) / number


def run_target(args: argparse.Namespace, target: str) -> dict[str, float]:
    """Build the target's pool, measure it, close it."""
    is_async = target.startswith("async-")
    if target.endswith("sqlite"):
        url = "sqlite+aiosqlite:///:memory:" if is_async else "sqlite:///:memory:"
        cycles = args.cycles
    else:
        driver = "asyncpg" if is_async else "psycopg"
        url = f"postgresql+{driver}://" + args.dsn.partition("://")[2]
        cycles = args.cycles // 2
    kwargs: dict[str, Any] = {"min_size": 1, "max_size": 1, "name": f"bench-{target}"}
    if not is_async and not target.endswith("sqlite"):
        kwargs["connect_args"] = {"autocommit": True}
    if is_async:
        loop = asyncio.new_event_loop()
        try:
            pool: Any = poolkeeper.AsyncPool(url, **kwargs)
            loop.run_until_complete(pool.open(wait=True, timeout=30.0))
            try:
                run = async_runner(pool, args.query, loop)
                return measure(target, run, pool, cycles, args.rounds)
            finally:
                loop.run_until_complete(pool.close())
        finally:
            loop.close()
    pool = poolkeeper.Pool(url, **kwargs)
    pool.open(wait=True, timeout=30.0)
    try:
        return measure(target, sync_runner(pool, args.query), pool, cycles, args.rounds)
    finally:
        pool.close()


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--cycles", type=int, default=40_000, help="per run (halved on PostgreSQL)"
    )
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    parser.add_argument("--query", action="store_true", help="run SELECT 1 per cycle")
    args = parser.parse_args(argv)
    targets = [t for t in args.targets.split(",") if t]
    unknown = set(targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets: {sorted(unknown)}; choose from {TARGETS}")

    table = {target: run_target(args, target) for target in targets}
    mode = "acquire + SELECT 1 + release" if args.query else "acquire + release"
    print(f"\n{mode}, 1 thread, max_size=1; median of {args.rounds} interleaved runs")
    print(f"{'target':<16}" + "".join(f"{c:>17}" for c in CONFIGS))
    for target, medians in table.items():
        base = medians["none"]
        cells = [f"{medians['none']:>10,.0f} ops/s"]
        for config in CONFIGS[1:]:
            overhead = (base / medians[config] - 1.0) * 100.0
            cells.append(f"{medians[config]:>9,.0f} {overhead:+6.1f}%")
        print(f"{target:<16}" + "".join(f"{cell:>17}" for cell in cells))
    guard = guard_cost()
    print("\noverhead = extra time per cycle relative to 'none'")
    for target, medians in table.items():
        cycle = 1.0 / medians["none"]
        print(
            f"no-listener guards ({target}): {guard * 1e9:.0f} ns of a "
            f"{cycle * 1e6:.2f} us cycle = {guard / cycle * 100:.1f}%"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
