"""The benchmark engine behind ``poolkeeper bench`` and ``poolkeeper tune``.

A workload runs one query in a closed loop from ``concurrency`` workers
(threads, or asyncio tasks with ``--async``) for a fixed duration. Each
operation is either *pooled* (borrow a connection from a static poolkeeper
pool, run the query, give it back) or *unpooled* (open a new connection with
the same driver adapter the pool uses, run the query, close it). Both commit
an open transaction before letting go, as :meth:`Pool.connection` does, so
the two do the same database work and differ only in where the connection
comes from.

Every operation records two durations: the whole operation, and the part
spent obtaining a connection (the pool's acquire wait, or the connect for the
unpooled workload). The workers do no locking: each appends to its own
lists, and a monitor samples the running totals for the progress bar and the
throughput timeline.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from poolkeeper.cli._common import (
    EXIT_FAILED,
    CliError,
    ProgressSink,
    Target,
    connect_failed,
    first_line,
    now,
    quantile,
)
from poolkeeper.cli._server import EXECUTE_RETURNS_CURSOR, close_cursor
from poolkeeper.drivers.base import AsyncDriver, Driver, TxStatus

#: Seconds between two samples of the throughput timeline.
TICK = 0.1
#: Seconds a pool may take to open its connections before the run starts.
OPEN_TIMEOUT = 30.0


@dataclass(frozen=True)
class WorkloadSpec:
    """What to run.

    Attributes:
        target: The database.
        query: The SQL run by every operation.
        concurrency: Workers running operations back to back.
        duration: Seconds to run.
        pool_size: Connections in the (static) pool; None for unpooled.
    """

    target: Target
    query: str
    concurrency: int
    duration: float
    pool_size: int | None

    @property
    def name(self) -> str:
        """A short label: ``unpooled`` or ``pooled``."""
        return "unpooled" if self.pool_size is None else "pooled"


@dataclass
class _Worker:
    latencies: list[float] = field(default_factory=list)
    acquires: list[float] = field(default_factory=list)
    error: BaseException | None = None


@dataclass
class WorkloadResult:
    """What one workload measured; all durations in seconds.

    Attributes:
        spec: The workload that ran.
        elapsed: Wall time from the start until the last worker stopped.
        latencies: Duration of every operation, ascending.
        acquires: Time each operation spent obtaining its connection, ascending.
        timeline: ``(seconds since start, ops/s over the last tick)`` samples.
    """

    spec: WorkloadSpec
    elapsed: float
    latencies: list[float]
    acquires: list[float]
    timeline: list[tuple[float, float]]

    @property
    def ops(self) -> int:
        """Operations completed."""
        return len(self.latencies)

    @property
    def ops_per_sec(self) -> float:
        """Completed operations per second of wall time."""
        return self.ops / self.elapsed if self.elapsed > 0 else 0.0

    def latency(self, q: float) -> float:
        """Return the ``q`` quantile of the operation latency."""
        return quantile(self.latencies, q)

    def acquire(self, q: float) -> float:
        """Return the ``q`` quantile of the time spent obtaining a connection."""
        return quantile(self.acquires, q)


def run(spec: WorkloadSpec, sink: ProgressSink) -> WorkloadResult:
    """Run one workload and return its measurements.

    Raises:
        CliError: With exit code 3 when the pool cannot open its connections,
            or 1 when an operation fails (the first error is reported).
    """
    if spec.target.is_async:
        return asyncio.run(_run_async(spec, sink))
    return _run_sync(spec, sink)


def _result(
    spec: WorkloadSpec,
    workers: list[_Worker],
    elapsed: float,
    timeline: list[tuple[float, float]],
) -> WorkloadResult:
    for worker in workers:
        if worker.error is not None:
            raise CliError(
                f"the {spec.name} workload failed: {first_line(worker.error)}",
                EXIT_FAILED,
            ) from worker.error
    latencies = sorted(x for w in workers for x in w.latencies)
    acquires = sorted(x for w in workers for x in w.acquires)
    return WorkloadResult(spec, elapsed, latencies, acquires, timeline)


class _Timeline:
    """Turns periodic samples of the running operation count into ops/s points."""

    def __init__(self, workers: list[_Worker], sink: ProgressSink) -> None:
        self.workers = workers
        self.sink = sink
        self.points: list[tuple[float, float]] = []
        self._last = (0.0, 0)

    def sample(self, elapsed: float) -> None:
        ops = sum(len(w.latencies) for w in self.workers)
        last_at, last_ops = self._last
        if elapsed > last_at:
            self.points.append((elapsed, (ops - last_ops) / (elapsed - last_at)))
        self._last = (elapsed, ops)
        self.sink.update(elapsed, ops)


# -- threads -----------------------------------------------------------------------


def _execute_sync(conn: Any, query: str) -> None:
    # Plain DB-API 2.0, which every sync driver speaks.
    cursor = conn.cursor()
    try:
        cursor.execute(query)
        if cursor.description is not None:
            cursor.fetchall()
    finally:
        cursor.close()


def _sync_operation(
    spec: WorkloadSpec, driver: Driver, pool: Any
) -> Callable[[_Worker], None]:
    query = spec.query

    if pool is not None:

        def pooled(worker: _Worker) -> None:
            start = now()
            with pool.connection() as conn:
                got = now()
                _execute_sync(conn, query)
            end = now()
            worker.acquires.append(got - start)
            worker.latencies.append(end - start)

        return pooled

    def unpooled(worker: _Worker) -> None:
        start = now()
        conn = driver.connect()
        got = now()
        try:
            _execute_sync(conn, query)
            if driver.transaction_status(conn) is not TxStatus.IDLE:
                driver.commit(conn)
        finally:
            driver.close(conn)
        end = now()
        worker.acquires.append(got - start)
        worker.latencies.append(end - start)

    return unpooled


def _run_sync(spec: WorkloadSpec, sink: ProgressSink) -> WorkloadResult:
    from poolkeeper import Pool
    from poolkeeper.drivers import driver_for_url

    driver: Any = driver_for_url(spec.target.url, {}, is_async=False)
    pool: Any = None
    if spec.pool_size is not None:
        pool = Pool(
            spec.target.url,
            min_size=spec.pool_size,
            max_size=spec.pool_size,
            max_idle=None,
            max_lifetime=None,
            name="bench",
        )
        try:
            pool.open(wait=True, timeout=OPEN_TIMEOUT)
        except Exception as exc:
            # A PoolTimeout chained to the connect error, or (when the pool
            # knows retrying cannot help) the driver's error itself.
            pool.close()
            raise connect_failed(spec.target, exc) from exc
    try:
        return _drive_threads(spec, _sync_operation(spec, driver, pool), sink)
    finally:
        if pool is not None:
            pool.close()


def _drive_threads(
    spec: WorkloadSpec, operation: Callable[[_Worker], None], sink: ProgressSink
) -> WorkloadResult:
    workers = [_Worker() for _ in range(spec.concurrency)]
    stop = threading.Event()
    start_line = threading.Barrier(spec.concurrency + 1)
    deadline = [0.0]

    def loop(worker: _Worker) -> None:
        start_line.wait()
        try:
            while not stop.is_set() and now() < deadline[0]:
                operation(worker)
        except Exception as exc:
            worker.error = exc
            stop.set()

    threads = [
        threading.Thread(target=loop, args=(w,), name=f"bench-{i}", daemon=True)
        for i, w in enumerate(workers)
    ]
    for thread in threads:
        thread.start()
    started = now()
    deadline[0] = started + spec.duration
    start_line.wait()
    timeline = _Timeline(workers, sink)
    while not stop.wait(min(TICK, max(0.0, deadline[0] - now()))):
        timeline.sample(now() - started)
        if now() >= deadline[0]:
            break
    stop.set()
    for thread in threads:
        thread.join()
    return _result(spec, workers, now() - started, timeline.points)


# -- asyncio -----------------------------------------------------------------------


def _async_executor(driver_name: str) -> Callable[[Any, str], Awaitable[None]]:
    """Return how to run a query on an async driver's connection (no common API)."""

    async def asyncpg_execute(conn: Any, query: str) -> None:
        await conn.fetch(query)

    async def cursor_execute(conn: Any, query: str) -> None:
        # psycopg 3 and aiosqlite: execute() returns a cursor.
        cursor = await conn.execute(query)
        try:
            if cursor.description is not None:
                await cursor.fetchall()
        finally:
            await close_cursor(cursor)

    async def dbapi_execute(conn: Any, query: str) -> None:
        cursor = await conn.cursor()
        try:
            await cursor.execute(query)
            if cursor.description is not None:
                await cursor.fetchall()
        finally:
            await close_cursor(cursor)

    if driver_name == "asyncpg":
        return asyncpg_execute
    if driver_name in EXECUTE_RETURNS_CURSOR:
        return cursor_execute
    return dbapi_execute


def _async_operation(
    spec: WorkloadSpec, driver: AsyncDriver, pool: Any
) -> Callable[[_Worker], Awaitable[None]]:
    query = spec.query
    execute = _async_executor(driver.name)

    async def pooled(worker: _Worker) -> None:
        start = now()
        async with pool.connection() as conn:
            got = now()
            await execute(conn, query)
        end = now()
        worker.acquires.append(got - start)
        worker.latencies.append(end - start)

    async def unpooled(worker: _Worker) -> None:
        start = now()
        conn = await driver.connect()
        got = now()
        try:
            await execute(conn, query)
            if driver.transaction_status(conn) is not TxStatus.IDLE:
                await driver.commit(conn)
        finally:
            await driver.close(conn)
        end = now()
        worker.acquires.append(got - start)
        worker.latencies.append(end - start)

    return pooled if pool is not None else unpooled


async def _run_async(spec: WorkloadSpec, sink: ProgressSink) -> WorkloadResult:
    from poolkeeper import AsyncPool
    from poolkeeper.drivers import driver_for_url

    driver: Any = driver_for_url(spec.target.url, {}, is_async=True)
    pool: Any = None
    if spec.pool_size is not None:
        pool = AsyncPool(
            spec.target.url,
            min_size=spec.pool_size,
            max_size=spec.pool_size,
            max_idle=None,
            max_lifetime=None,
            name="bench",
        )
        try:
            await pool.open(wait=True, timeout=OPEN_TIMEOUT)
        except Exception as exc:
            # A PoolTimeout chained to the connect error, or (when the pool
            # knows retrying cannot help) the driver's error itself.
            await pool.close()
            raise connect_failed(spec.target, exc) from exc
    try:
        return await _drive_tasks(spec, _async_operation(spec, driver, pool), sink)
    finally:
        if pool is not None:
            await pool.close()


async def _drive_tasks(
    spec: WorkloadSpec,
    operation: Callable[[_Worker], Awaitable[None]],
    sink: ProgressSink,
) -> WorkloadResult:
    workers = [_Worker() for _ in range(spec.concurrency)]
    stop = asyncio.Event()
    started = now()
    deadline = started + spec.duration

    async def loop(worker: _Worker) -> None:
        try:
            while not stop.is_set() and now() < deadline:
                await operation(worker)
        except Exception as exc:
            worker.error = exc
            stop.set()

    tasks = [asyncio.create_task(loop(w)) for w in workers]
    timeline = _Timeline(workers, sink)
    while now() < deadline and not stop.is_set():
        await asyncio.sleep(min(TICK, max(0.0, deadline - now())))
        timeline.sample(now() - started)
    await asyncio.gather(*tasks)
    return _result(spec, workers, now() - started, timeline.points)


# -- preflight ---------------------------------------------------------------------


def preflight(target: Target, query: str) -> None:
    """Open one connection and run the query once, to fail early and clearly.

    Raises:
        CliError: Exit code 3 when connecting fails, 1 when the query fails.
    """
    from poolkeeper.drivers import driver_for_url

    driver: Any = driver_for_url(target.url, {}, is_async=target.is_async)
    if target.is_async:
        asyncio.run(_preflight_async(target, driver, query))
        return
    try:
        conn = driver.connect()
    except Exception as exc:
        raise connect_failed(target, exc) from exc
    try:
        _execute_sync(conn, query)
        driver.rollback(conn)
    except Exception as exc:
        raise CliError(f"the query failed: {first_line(exc)}", EXIT_FAILED) from exc
    finally:
        driver.close(conn)


async def _preflight_async(target: Target, driver: Any, query: str) -> None:
    try:
        conn = await driver.connect()
    except Exception as exc:
        raise connect_failed(target, exc) from exc
    try:
        await _async_executor(driver.name)(conn, query)
        if driver.transaction_status(conn) is not TxStatus.IDLE:
            await driver.rollback(conn)
    except Exception as exc:
        raise CliError(f"the query failed: {first_line(exc)}", EXIT_FAILED) from exc
    finally:
        await driver.close(conn)
