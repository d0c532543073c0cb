"""Peer benchmark: poolkeeper against the connection pools people already use.

Workloads, on a real PostgreSQL server:

* ``conn``: the connection cycle, acquire + release with no query. This is the
  pool's own overhead and nothing else.
* ``hold`` (async only): acquire + ``await asyncio.sleep(0)`` + release. Like
  ``conn`` but the task yields while it holds the connection, so other tasks
  run, contend and wait: a pool whose uncontended checkout never suspends
  would otherwise let one task run the whole ``conn`` row alone.
* ``stmt``: the statement cycle, acquire + ``SELECT 1`` + fetch + release. One
  round trip to the server per operation; shows how much of a real request the
  pool costs.

Sync contenders (threads): poolkeeper ``Pool`` (``with pool.connection()`` and
``acquire()``/``release()`` over psycopg 3; ``with`` with ``fair=False``; ``with``
over psycopg2, the driver of psycopg2's own pool), SQLAlchemy ``QueuePool``,
psycopg_pool ``ConnectionPool`` and psycopg2 ``ThreadedConnectionPool``.
Async contenders (asyncio tasks): poolkeeper ``AsyncPool`` over asyncpg and
over psycopg 3, asyncpg's own pool (default reset, and with a no-op reset) and
psycopg_pool ``AsyncConnectionPool``.

Fairness: every connection is in autocommit mode (psycopg 3 and psycopg2
``autocommit=True``; asyncpg has no implicit transactions), so no pool has a
transaction to commit or roll back on return and the statement cycle is exactly
one round trip for everyone. Every pool is static (min = max) and filled before
timing starts. Health checks on checkout are off everywhere (their defaults).

Method: each row runs every contender for a fixed time after a warm-up, with a
new pool per run, and repeats that several times with the contenders' order
rotated on every repeat (ABCD, BCDA, ...), because a small noisy machine drifts.
Workers count their own operations in their own slot of a list (no lock in the
measured loop); the main thread reads the counters at the start and the end of
the window. The table shows the median ops/s of the repeats and the ratio of
poolkeeper to the fastest peer of the row.

Examples::

    python benchmarks/bench_pools.py --quick
    python benchmarks/bench_pools.py --only async --json bench-out/async.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, Protocol

import asyncpg
import psycopg
import psycopg2
import psycopg2.pool
from psycopg_pool import AsyncConnectionPool, ConnectionPool
from sqlalchemy.pool import QueuePool

try:
    import poolkeeper
except ImportError as exc:  # the pool under test may not be installed yet
    poolkeeper = None
    POOLKEEPER_IMPORT_ERROR: str | None = f"{type(exc).__name__}: {exc}"
else:
    POOLKEEPER_IMPORT_ERROR = None
    if not hasattr(poolkeeper, "Pool") or not hasattr(poolkeeper, "AsyncPool"):
        POOLKEEPER_IMPORT_ERROR = (
            "poolkeeper is importable but has no Pool/AsyncPool yet"
        )

Workload = Literal["conn", "hold", "stmt"]
Mode = Literal["sync", "async"]

SQL = "SELECT 1"
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
#: How long a run may take beyond its planned time before it counts as hung.
HANG_GRACE = 30.0


class BenchError(Exception):
    """A contender failed (raised or hung) during a run."""


# -- contenders: sync ----------------------------------------------------------


class SyncSubject(Protocol):
    """One open pool, ready to be driven by worker threads."""

    def conn_cycle(self) -> None: ...

    def stmt_cycle(self) -> None: ...

    def close(self) -> None: ...


def _with_scheme(dsn: str, driver: str) -> str:
    """``postgresql://...`` -> ``postgresql+DRIVER://...`` for poolkeeper."""
    _, sep, rest = dsn.partition("://")
    if not sep:
        raise SystemExit(f"--dsn must be a URL (postgresql://...), got {dsn!r}")
    return f"postgresql+{driver}://{rest}"


class PoolkeeperWith:
    """poolkeeper ``Pool`` driven with ``with pool.connection() as conn``."""

    fair = True
    driver = "psycopg"

    def __init__(self, dsn: str, size: int) -> None:
        assert poolkeeper is not None
        self.pool = poolkeeper.Pool(
            _with_scheme(dsn, self.driver),
            min_size=size,
            max_size=size,
            connect_args={"autocommit": True},
            name="bench",
            fair=self.fair,
        )
        self.pool.open(wait=True, timeout=30.0)

    def conn_cycle(self) -> None:
        with self.pool.connection():
            pass

    def stmt_cycle(self) -> None:
        with self.pool.connection() as conn:
            conn.execute(SQL).fetchone()

    def close(self) -> None:
        self.pool.close()


class PoolkeeperAcquire(PoolkeeperWith):
    """poolkeeper ``Pool`` driven with ``acquire()`` / ``release()``."""

    def conn_cycle(self) -> None:
        pool = self.pool
        pool.release(pool.acquire())

    def stmt_cycle(self) -> None:
        pool = self.pool
        conn = pool.acquire()
        try:
            conn.execute(SQL).fetchone()
        finally:
            pool.release(conn)


class PoolkeeperUnfair(PoolkeeperWith):
    """poolkeeper ``Pool(fair=False)`` with ``with pool.connection()``.

    Not the default: waiters are not served strictly in arrival order (a
    running thread may take a returned connection first), which is what the
    peer pools do; shown to separate the cost of FIFO hand-off from the rest.
    """

    fair = False


def _set_autocommit(conn: Any) -> None:
    conn.autocommit = True


class PoolkeeperPsycopg2(PoolkeeperWith):
    """poolkeeper ``Pool`` over psycopg2 connections, ``with pool.connection()``.

    The same driver as psycopg2's own pool, so the statement cycle compares
    the pools and not psycopg2 against psycopg 3.
    """

    def __init__(self, dsn: str, size: int) -> None:
        assert poolkeeper is not None
        # psycopg2.connect() takes no autocommit argument: set it on each
        # new connection, as the psycopg2 contender does.
        self.pool = poolkeeper.Pool(
            _with_scheme(dsn, "psycopg2"),
            min_size=size,
            max_size=size,
            configure=_set_autocommit,
            name="bench",
        )
        self.pool.open(wait=True, timeout=30.0)

    def stmt_cycle(self) -> None:
        with self.pool.connection() as conn:
            cur = conn.cursor()
            cur.execute(SQL)
            cur.fetchone()
            cur.close()


class SqlalchemyQueuePool:
    """SQLAlchemy ``QueuePool`` over psycopg 3: ``pool.connect()`` + ``.close()``.

    Defaults kept: no pre-ping, ``reset_on_return="rollback"`` (a no-op without
    I/O for an idle autocommit psycopg connection).
    """

    def __init__(self, dsn: str, size: int) -> None:
        self.pool = QueuePool(
            lambda: psycopg.connect(dsn, autocommit=True),
            pool_size=size,
            max_overflow=0,
        )
        held = [self.pool.connect() for _ in range(size)]
        for fairy in held:
            fairy.close()

    def conn_cycle(self) -> None:
        self.pool.connect().close()

    def stmt_cycle(self) -> None:
        fairy = self.pool.connect()
        try:
            fairy.dbapi_connection.execute(SQL).fetchone()
        finally:
            fairy.close()

    def close(self) -> None:
        self.pool.dispose()


class PsycopgPool:
    """psycopg_pool ``ConnectionPool``: ``with pool.connection() as conn``."""

    def __init__(self, dsn: str, size: int) -> None:
        self.pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            dsn,
            min_size=size,
            max_size=size,
            kwargs={"autocommit": True},
            open=False,
        )
        self.pool.open(wait=True, timeout=30.0)

    def conn_cycle(self) -> None:
        with self.pool.connection():
            pass

    def stmt_cycle(self) -> None:
        with self.pool.connection() as conn:
            conn.execute(SQL).fetchone()

    def close(self) -> None:
        self.pool.close()


class Psycopg2Threaded:
    """psycopg2 ``ThreadedConnectionPool``: ``getconn()`` / ``putconn()``.

    That pool never waits: it raises when it is exhausted. When there are more
    threads than connections the benchmark bounds checkouts with a semaphore,
    as an application has to; with enough connections it calls the pool bare.
    """

    def __init__(self, dsn: str, size: int, threads: int) -> None:
        self.pool = psycopg2.pool.ThreadedConnectionPool(size, size, dsn)
        held = [self.pool.getconn() for _ in range(size)]
        for conn in held:
            conn.autocommit = True
            self.pool.putconn(conn)
        self.gate: threading.BoundedSemaphore | None = (
            threading.BoundedSemaphore(size) if threads > size else None
        )
        if self.gate is not None:
            self.conn_cycle = self._gated_conn_cycle  # type: ignore[method-assign]
            self.stmt_cycle = self._gated_stmt_cycle  # type: ignore[method-assign]

    def conn_cycle(self) -> None:
        pool = self.pool
        pool.putconn(pool.getconn())

    def stmt_cycle(self) -> None:
        pool = self.pool
        conn = pool.getconn()
        try:
            cur = conn.cursor()
            cur.execute(SQL)
            cur.fetchone()
            cur.close()
        finally:
            pool.putconn(conn)

    def _gated_conn_cycle(self) -> None:
        assert self.gate is not None
        with self.gate:
            self.pool.putconn(self.pool.getconn())

    def _gated_stmt_cycle(self) -> None:
        assert self.gate is not None
        with self.gate:
            conn = self.pool.getconn()
            try:
                cur = conn.cursor()
                cur.execute(SQL)
                cur.fetchone()
                cur.close()
            finally:
                self.pool.putconn(conn)

    def close(self) -> None:
        self.pool.closeall()


# -- contenders: async ---------------------------------------------------------


class AsyncSubject(Protocol):
    """One open asyncio pool, ready to be driven by tasks."""

    async def conn_cycle(self) -> None: ...

    async def hold_cycle(self) -> None: ...

    async def stmt_cycle(self) -> None: ...

    async def close(self) -> None: ...


class PoolkeeperAsyncpg:
    """poolkeeper ``AsyncPool`` over asyncpg: ``async with pool.connection()``."""

    driver = "asyncpg"

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    @classmethod
    async def create(cls, dsn: str, size: int) -> PoolkeeperAsyncpg:
        assert poolkeeper is not None
        kwargs: dict[str, Any] = {"min_size": size, "max_size": size, "name": "bench"}
        if cls.driver == "psycopg":
            kwargs["connect_args"] = {"autocommit": True}
        pool = poolkeeper.AsyncPool(_with_scheme(dsn, cls.driver), **kwargs)
        await pool.open(wait=True, timeout=30.0)
        return cls(pool)

    async def conn_cycle(self) -> None:
        async with self.pool.connection():
            pass

    async def hold_cycle(self) -> None:
        async with self.pool.connection():
            await asyncio.sleep(0)

    async def stmt_cycle(self) -> None:
        async with self.pool.connection() as conn:
            await conn.fetchval(SQL)

    async def close(self) -> None:
        await self.pool.close()


class PoolkeeperAsyncPsycopg(PoolkeeperAsyncpg):
    """poolkeeper ``AsyncPool`` over psycopg 3 async connections."""

    driver = "psycopg"

    async def stmt_cycle(self) -> None:
        async with self.pool.connection() as conn:
            cur = await conn.execute(SQL)
            await cur.fetchone()


async def _no_reset(conn: asyncpg.Connection) -> None:
    """asyncpg ``reset=`` hook that sends nothing to the server."""


class AsyncpgPool:
    """asyncpg ``create_pool``: ``async with pool.acquire() as conn``.

    asyncpg's default reset on release is one round trip (``RESET ALL`` and
    friends); the ``noreset`` variant passes a no-op ``reset=`` hook, which is
    what poolkeeper and psycopg_pool do by default (no session reset).
    """

    reset: Callable[[asyncpg.Connection], Awaitable[None]] | None = None

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @classmethod
    async def create(cls, dsn: str, size: int) -> AsyncpgPool:
        pool = await asyncpg.create_pool(
            dsn, min_size=size, max_size=size, reset=cls.reset
        )
        return cls(pool)

    async def conn_cycle(self) -> None:
        async with self.pool.acquire():
            pass

    async def hold_cycle(self) -> None:
        async with self.pool.acquire():
            await asyncio.sleep(0)

    async def stmt_cycle(self) -> None:
        async with self.pool.acquire() as conn:
            await conn.fetchval(SQL)

    async def close(self) -> None:
        await self.pool.close()


class AsyncpgPoolNoReset(AsyncpgPool):
    """asyncpg ``create_pool(reset=<no-op>)``."""

    reset = staticmethod(_no_reset)


class PsycopgAsyncPool:
    """psycopg_pool ``AsyncConnectionPool``: ``async with pool.connection()``."""

    def __init__(self, pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]]) -> None:
        self.pool = pool

    @classmethod
    async def create(cls, dsn: str, size: int) -> PsycopgAsyncPool:
        pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
            dsn, min_size=size, max_size=size, kwargs={"autocommit": True}, open=False
        )
        await pool.open(wait=True, timeout=30.0)
        return cls(pool)

    async def conn_cycle(self) -> None:
        async with self.pool.connection():
            pass

    async def hold_cycle(self) -> None:
        async with self.pool.connection():
            await asyncio.sleep(0)

    async def stmt_cycle(self) -> None:
        async with self.pool.connection() as conn:
            cur = await conn.execute(SQL)
            await cur.fetchone()

    async def close(self) -> None:
        await self.pool.close()


@dataclasses.dataclass(frozen=True)
class Contender:
    """A pool (and a way of using it) that takes part in the benchmark."""

    key: str
    label: str
    mode: Mode
    is_poolkeeper: bool
    sync_factory: Callable[[str, int, int], SyncSubject] | None = None
    async_factory: Callable[[str, int], Awaitable[AsyncSubject]] | None = None


SYNC_CONTENDERS = (
    Contender(
        "pk-with",
        "poolkeeper `with`",
        "sync",
        True,
        sync_factory=lambda dsn, size, _t: PoolkeeperWith(dsn, size),
    ),
    Contender(
        "pk-acquire",
        "poolkeeper acquire/release",
        "sync",
        True,
        sync_factory=lambda dsn, size, _t: PoolkeeperAcquire(dsn, size),
    ),
    Contender(
        "pk-unfair",
        "poolkeeper `with` fair=False",
        "sync",
        True,
        sync_factory=lambda dsn, size, _t: PoolkeeperUnfair(dsn, size),
    ),
    Contender(
        "pk-psycopg2",
        "poolkeeper `with` psycopg2",
        "sync",
        True,
        sync_factory=lambda dsn, size, _t: PoolkeeperPsycopg2(dsn, size),
    ),
    Contender(
        "sqla",
        "SQLAlchemy QueuePool",
        "sync",
        False,
        sync_factory=lambda dsn, size, _t: SqlalchemyQueuePool(dsn, size),
    ),
    Contender(
        "psycopg-pool",
        "psycopg_pool",
        "sync",
        False,
        sync_factory=lambda dsn, size, _t: PsycopgPool(dsn, size),
    ),
    Contender(
        "psycopg2",
        "psycopg2 Threaded",
        "sync",
        False,
        sync_factory=Psycopg2Threaded,
    ),
)

ASYNC_CONTENDERS = (
    Contender(
        "pk-asyncpg",
        "poolkeeper asyncpg",
        "async",
        True,
        async_factory=PoolkeeperAsyncpg.create,
    ),
    Contender(
        "pk-psycopg",
        "poolkeeper psycopg",
        "async",
        True,
        async_factory=PoolkeeperAsyncPsycopg.create,
    ),
    Contender(
        "asyncpg", "asyncpg pool", "async", False, async_factory=AsyncpgPool.create
    ),
    Contender(
        "asyncpg-noreset",
        "asyncpg pool (no reset)",
        "async",
        False,
        async_factory=AsyncpgPoolNoReset.create,
    ),
    Contender(
        "psycopg-pool-async",
        "psycopg_pool async",
        "async",
        False,
        async_factory=PsycopgAsyncPool.create,
    ),
)


# -- measurement ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Timing:
    """How long to warm up and to measure each run."""

    warmup: float
    duration: float


@dataclasses.dataclass(frozen=True)
class Result:
    """What one run measured."""

    ops_per_s: float
    active: int
    """Workers (threads or tasks) that completed at least one counted operation."""


@dataclasses.dataclass(frozen=True)
class Window:
    """The measured interval, in ``time.perf_counter()`` seconds.

    An operation counts when it *completes* inside ``[start, end)``; operations
    that complete during the warm-up before ``start`` do not count, and a worker
    stops after its first operation that completes at or after ``end``. Every
    worker checks the clock itself after each operation, so no worker ever
    depends on another one (or on the event loop) to learn the time: a pool
    whose checkout never suspends cannot starve the measurement.
    """

    start: float
    end: float

    @classmethod
    def after(cls, timing: Timing) -> Window:
        start = time.perf_counter() + timing.warmup
        return cls(start, start + timing.duration)


def run_sync(
    subject: SyncSubject, workload: Workload, threads: int, timing: Timing
) -> Result:
    """Drive ``subject`` from ``threads`` threads; return ops/s in the window."""
    op = subject.conn_cycle if workload == "conn" else subject.stmt_cycle
    counts = [0] * threads
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads + 1)
    windows: list[Window] = []

    def worker(slot: int) -> None:
        clock = time.perf_counter
        barrier.wait()
        start, end = windows[0].start, windows[0].end
        n = 0
        try:
            while True:
                op()
                now = clock()
                if now >= start:
                    if now >= end:
                        break
                    n += 1
        except BaseException as exc:
            errors.append(exc)
        counts[slot] = n

    workers = [
        threading.Thread(target=worker, args=(i,), daemon=True, name=f"bench-{i}")
        for i in range(threads)
    ]
    for thread in workers:
        thread.start()
    windows.append(Window.after(timing))
    barrier.wait()
    deadline = windows[0].end + HANG_GRACE
    for thread in workers:
        thread.join(max(0.0, deadline - time.perf_counter()))
    if errors:
        raise BenchError(f"worker failed: {errors[0]!r}") from errors[0]
    if any(thread.is_alive() for thread in workers):
        raise BenchError(
            f"workers still running {HANG_GRACE:.0f} s after the window (hung?)"
        )
    return Result(sum(counts) / timing.duration, sum(1 for n in counts if n))


async def run_async(
    subject: AsyncSubject, workload: Workload, tasks: int, timing: Timing
) -> Result:
    """Drive ``subject`` from ``tasks`` asyncio tasks; return ops/s in the window."""
    op = {
        "conn": subject.conn_cycle,
        "hold": subject.hold_cycle,
        "stmt": subject.stmt_cycle,
    }[workload]
    window = Window.after(timing)
    start, end = window.start, window.end

    async def worker() -> int:
        clock = time.perf_counter
        n = 0
        while True:
            await op()
            now = clock()
            if now >= start:
                if now >= end:
                    return n
                n += 1

    running = [asyncio.create_task(worker()) for _ in range(tasks)]
    try:
        done, pending = await asyncio.wait(
            running, timeout=timing.warmup + timing.duration + HANG_GRACE
        )
    finally:
        for task in running:
            task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=5.0)
        raise BenchError(
            f"{len(pending)} tasks still running {HANG_GRACE:.0f} s after the window (hung?)"
        )
    for task in done:
        exc = task.exception()
        if exc is not None:
            raise BenchError(f"task failed: {exc!r}") from exc
    counts = [task.result() for task in done]
    return Result(sum(counts) / timing.duration, sum(1 for n in counts if n))


def sync_trial(
    contender: Contender,
    dsn: str,
    size: int,
    workload: Workload,
    threads: int,
    timing: Timing,
) -> Result:
    """One run: open a fresh pool, measure, close it."""
    assert contender.sync_factory is not None
    subject = contender.sync_factory(dsn, size, threads)
    try:
        return run_sync(subject, workload, threads, timing)
    finally:
        _close_sync(subject)


def _close_sync(subject: SyncSubject) -> None:
    """Close a pool, but give up (leaving a daemon thread) if it hangs."""
    closer = threading.Thread(target=subject.close, daemon=True, name="bench-close")
    closer.start()
    closer.join(HANG_GRACE)
    if closer.is_alive():
        print(f"    warning: {type(subject).__name__}.close() hung", file=sys.stderr)


async def async_trial(
    contender: Contender,
    dsn: str,
    size: int,
    workload: Workload,
    tasks: int,
    timing: Timing,
) -> Result:
    """One run: open a fresh pool, measure, close it."""
    assert contender.async_factory is not None
    subject = await asyncio.wait_for(contender.async_factory(dsn, size), HANG_GRACE)
    try:
        return await run_async(subject, workload, tasks, timing)
    finally:
        try:
            await asyncio.wait_for(subject.close(), HANG_GRACE)
        except Exception as exc:
            print(
                f"    warning: {type(subject).__name__}.close(): {exc!r}",
                file=sys.stderr,
            )


# -- rows and results ----------------------------------------------------------


@dataclasses.dataclass
class Row:
    """One line of the table: a workload at a concurrency and a pool size."""

    mode: Mode
    workload: Workload
    concurrency: int
    pool_max: int
    samples: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    errors: dict[str, str] = dataclasses.field(default_factory=dict)
    active: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    load: list[float] = dataclasses.field(default_factory=list)
    """1-minute load average when the row started (other work on the machine)."""

    def median(self, key: str) -> float | None:
        values = self.samples.get(key)
        return statistics.median(values) if values else None

    def spread(self, key: str) -> float | None:
        """(max - min) / median of the repeats: how noisy this cell was."""
        values = self.samples.get(key)
        if not values or len(values) < 2:
            return None
        mid = statistics.median(values)
        return (max(values) - min(values)) / mid if mid else None


def rotated(items: Sequence[Contender], shift: int) -> list[Contender]:
    """The contenders in the order of repeat number ``shift`` (ABCD, BCDA, ...)."""
    if not items:
        return []
    k = shift % len(items)
    return [*items[k:], *items[:k]]


def run_rows(
    rows: list[Row],
    contenders: Sequence[Contender],
    dsn: str,
    repeats: int,
    timing: Timing,
) -> None:
    """Fill every row's samples, repeats interleaved across contenders."""
    for row in rows:
        what = "threads" if row.mode == "sync" else "tasks"
        row.load = list(os.getloadavg())
        print(
            f"== {row.mode} {row.workload} cycle, {row.concurrency} {what}, "
            f"pool max {row.pool_max} (load {row.load[0]:.2f})",
            flush=True,
        )
        for rep in range(repeats):
            for contender in rotated(contenders, rep):
                if contender.key in row.errors:
                    continue
                try:
                    if row.mode == "sync":
                        result = sync_trial(
                            contender,
                            dsn,
                            row.pool_max,
                            row.workload,
                            row.concurrency,
                            timing,
                        )
                    else:
                        result = asyncio.run(
                            async_trial(
                                contender,
                                dsn,
                                row.pool_max,
                                row.workload,
                                row.concurrency,
                                timing,
                            )
                        )
                except Exception as exc:
                    row.errors[contender.key] = f"{type(exc).__name__}: {exc}"
                    print(f"   {contender.label:28} FAILED: {exc!r}", flush=True)
                    continue
                row.samples.setdefault(contender.key, []).append(result.ops_per_s)
                row.active.setdefault(contender.key, []).append(result.active)
                print(
                    f"   [{rep + 1}/{repeats}] {contender.label:28} "
                    f"{result.ops_per_s:12,.0f} ops/s  "
                    f"({result.active}/{row.concurrency} {what} served)",
                    flush=True,
                )


def best_peer(
    row: Row, contenders: Sequence[Contender]
) -> tuple[Contender, float] | None:
    """The fastest non-poolkeeper contender of the row by median."""
    best: tuple[Contender, float] | None = None
    for contender in contenders:
        if contender.is_poolkeeper:
            continue
        value = row.median(contender.key)
        if value is not None and (best is None or value > best[1]):
            best = (contender, value)
    return best


def markdown_table(rows: Sequence[Row], contenders: Sequence[Contender]) -> str:
    """The results as a GitHub markdown table (median ops/s, ratios)."""
    if not rows:
        return ""
    mode = rows[0].mode
    unit = "threads" if mode == "sync" else "tasks"
    pk = [c for c in contenders if c.is_poolkeeper]
    head = ["workload", unit, "max"]
    head += [c.label for c in contenders]
    head += ["fastest peer"]
    head += [f"{c.label} / fastest peer" for c in pk]
    head += ["spread"]
    lines = [
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---"] * 3 + ["---:"] * (len(head) - 3)) + "|",
    ]
    for row in rows:
        cells = [row.workload, str(row.concurrency), str(row.pool_max)]
        for contender in contenders:
            value = row.median(contender.key)
            if contender.key in row.errors and value is None:
                cells.append("error")
            elif value is None:
                cells.append("-")
            else:
                cells.append(f"{value:,.0f}")
        best = best_peer(row, contenders)
        cells.append(best[0].label if best else "-")
        for contender in pk:
            value = row.median(contender.key)
            if best is None or value is None:
                cells.append("-")
            else:
                cells.append(f"**{value / best[1]:.2f}x**")
        spreads = [s for c in contenders if (s := row.spread(c.key)) is not None]
        cells.append(f"{max(spreads):.0%}" if spreads else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# -- machine facts -------------------------------------------------------------


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _poolkeeper_revision() -> str:
    """The git commit poolkeeper was imported from, and whether src/ was dirty."""
    if poolkeeper is None or not getattr(poolkeeper, "__file__", None):
        return "unknown"
    root = os.path.dirname(os.path.abspath(poolkeeper.__file__))
    try:
        head = subprocess.run(
            ["git", "-C", root, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", root, "status", "--porcelain", "--", "."],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head} (src/poolkeeper modified)" if dirty else head


def machine_facts(dsn: str) -> dict[str, Any]:
    """What the numbers were measured on."""
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            server = str(row[0]) if row else "unknown"
    except psycopg.Error as exc:
        server = f"unreachable ({exc})"
    return {
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "postgresql": server,
        "poolkeeper_revision": _poolkeeper_revision(),
        "loadavg_at_start": list(os.getloadavg()),
        "packages": {
            name: _version(name)
            for name in (
                "poolkeeper",
                "psycopg",
                "psycopg-binary",
                "psycopg-pool",
                "psycopg2-binary",
                "asyncpg",
                "SQLAlchemy",
            )
        },
    }


# -- command line --------------------------------------------------------------


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark poolkeeper against peer connection pools on PostgreSQL.",
    )
    parser.add_argument(
        "--dsn",
        default=os.environ.get("BENCH_DSN", DEFAULT_DSN),
        help="PostgreSQL URL, postgresql://user@host:port/db (default: %(default)s)",
    )
    parser.add_argument(
        "--only", choices=("sync", "async"), help="run only the sync or the async part"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="short runs (0.5 s, 0.2 s warm-up, 2 repeats) for a smoke test",
    )
    parser.add_argument(
        "--duration", type=float, help="measured seconds per run (default 2, quick 0.5)"
    )
    parser.add_argument(
        "--warmup", type=float, help="warm-up seconds per run (default 0.5, quick 0.2)"
    )
    parser.add_argument(
        "--repeats", type=int, help="runs per contender and row (default 5, quick 2)"
    )
    parser.add_argument(
        "--workloads",
        default="conn,hold,stmt",
        help="comma-separated: conn, hold (async only), stmt (default: %(default)s)",
    )
    parser.add_argument(
        "--threads",
        type=_int_list,
        default=[1, 8],
        help="sync thread counts (default: 1,8)",
    )
    parser.add_argument(
        "--sizes",
        type=_int_list,
        default=[4, 16],
        help="sync pool sizes (default: 4,16)",
    )
    parser.add_argument(
        "--tasks",
        type=_int_list,
        default=[1, 64, 1000],
        help="async task counts (default: 1,64,1000)",
    )
    parser.add_argument(
        "--async-sizes",
        type=_int_list,
        default=[10],
        help="async pool sizes (default: 10)",
    )
    parser.add_argument(
        "--contenders",
        help="comma-separated contender keys to run (default: all); "
        "keys: " + ", ".join(c.key for c in (*SYNC_CONTENDERS, *ASYNC_CONTENDERS)),
    )
    parser.add_argument(
        "--json", metavar="PATH", help="also write every sample and the facts as JSON"
    )
    args = parser.parse_args(argv)
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    bad = [w for w in workloads if w not in ("conn", "hold", "stmt")]
    if bad or not workloads:
        parser.error(
            f"--workloads takes conn, hold and/or stmt, got {args.workloads!r}"
        )
    args.workloads = workloads
    args.duration = (
        args.duration if args.duration is not None else (0.5 if args.quick else 2.0)
    )
    args.warmup = (
        args.warmup if args.warmup is not None else (0.2 if args.quick else 0.5)
    )
    args.repeats = (
        args.repeats if args.repeats is not None else (2 if args.quick else 5)
    )
    if args.duration <= 0 or args.warmup < 0 or args.repeats <= 0:
        parser.error("--duration and --repeats must be positive, --warmup not negative")
    return args


def select(contenders: Sequence[Contender], wanted: set[str] | None) -> list[Contender]:
    """Drop unwanted contenders, and poolkeeper's when it cannot be imported."""
    chosen = [c for c in contenders if wanted is None or c.key in wanted]
    if POOLKEEPER_IMPORT_ERROR is not None:
        skipped = [c.key for c in chosen if c.is_poolkeeper]
        if skipped:
            print(
                f"skipping {', '.join(skipped)}: poolkeeper unavailable ({POOLKEEPER_IMPORT_ERROR})"
            )
        chosen = [c for c in chosen if not c.is_poolkeeper]
    return chosen


def build_rows(args: argparse.Namespace, mode: Mode) -> list[Row]:
    if mode == "sync":
        return [
            Row("sync", w, n, size)
            for w in args.workloads
            if w != "hold"  # async only: threads are preempted anyway
            for n in args.threads
            for size in args.sizes
        ]
    return [
        Row("async", w, n, size)
        for w in args.workloads
        for n in args.tasks
        for size in args.async_sizes
    ]


def _row_json(row: Row, contenders: Sequence[Contender]) -> dict[str, Any]:
    best = best_peer(row, contenders)
    return {
        "mode": row.mode,
        "workload": row.workload,
        "concurrency": row.concurrency,
        "pool_max": row.pool_max,
        "samples": row.samples,
        "active_workers": row.active,
        "loadavg_at_start": row.load,
        "median": {
            c.key: row.median(c.key) for c in contenders if c.key in row.samples
        },
        "errors": row.errors,
        "fastest_peer": best[0].key if best else None,
        "ratio_to_fastest_peer": {
            c.key: (m / best[1])
            for c in contenders
            if c.is_poolkeeper and best and (m := row.median(c.key)) is not None
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    wanted = (
        {k.strip() for k in args.contenders.split(",")} if args.contenders else None
    )
    timing = Timing(args.warmup, args.duration)
    facts = machine_facts(args.dsn)
    print(
        f"# {facts['cpu']} x{facts['cpus']}, {facts['python']}, PostgreSQL {facts['postgresql']}"
    )
    print(
        f"# {timing.duration:g} s per run after {timing.warmup:g} s warm-up, {args.repeats} repeats, "
        "contenders rotated per repeat; all connections autocommit"
    )
    modes: list[Mode] = ["sync", "async"] if args.only is None else [args.only]
    tables: list[str] = []
    report: dict[str, Any] = {
        "facts": facts,
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "settings": {
            "duration": timing.duration,
            "warmup": timing.warmup,
            "repeats": args.repeats,
            "autocommit": True,
        },
        "poolkeeper_error": POOLKEEPER_IMPORT_ERROR,
        "contenders": {},
        "rows": [],
    }
    started = time.monotonic()
    for mode in modes:
        contenders = select(
            SYNC_CONTENDERS if mode == "sync" else ASYNC_CONTENDERS, wanted
        )
        if not contenders:
            continue
        rows = build_rows(args, mode)
        run_rows(rows, contenders, args.dsn, args.repeats, timing)
        title = "Sync (threads)" if mode == "sync" else "Async (asyncio tasks)"
        tables.append(
            f"### {title}: median ops/s\n\n{markdown_table(rows, contenders)}"
        )
        report["contenders"].update({c.key: c.label for c in contenders})
        report["rows"] += [_row_json(row, contenders) for row in rows]
    report["elapsed_s"] = time.monotonic() - started
    print()
    print("\n\n".join(tables))
    if args.json:
        directory = os.path.dirname(args.json)
        if directory:
            os.makedirs(directory, exist_ok=True)
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=2)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
