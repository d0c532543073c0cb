"""Outages for the reconnect pacing tests and ``benchmarks/reconnect_pacing.py``.

:func:`run_outage` takes a warm pool through one outage while callers keep
asking for connections, and reports what issue 20 (item 3) measures: connect
attempts per second while the server is down, the time from the server
accepting connections again to the first successful checkout, and what the
callers saw (``PoolTimeout`` only, each after the caller's own timeout).

Two ways to take the server away, both on loopback:

- ``"proxy"``: the :class:`~tests.support.faultproxy.FaultProxy` in front of
  the server switches to ``reset`` (live links and every new connection get
  an RST) and back to ``pass``. The instant it accepts again is exact.
- ``"restart"``: ``pg_ctl stop -m immediate`` on a private cluster, then
  ``pg_ctl start``: connects are refused, then answered "the database system
  is starting up" (57P03), then accepted. A probe thread connecting every
  5 ms with psycopg finds the instant the server accepts.

The server comes back right after a failed attempt of the pool (its
``connect_errors`` just went up), once the outage has lasted its length: so
the time to the first checkout is the pool's pacing, not the luck of where
the server's return falls between two backed-off attempts.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

import poolkeeper
from tests.support.faultproxy import FaultProxy
from tests.support.pgcluster import PgCluster

#: The callers' pool timeout.
CALLER_TIMEOUT = 1.0
#: Callers (threads or tasks) asking for connections during the outage.
CALLERS = 2
#: Pool drivers: name -> (URL scheme, asyncio?).
DRIVERS: dict[str, tuple[str, bool]] = {
    "psycopg": ("postgresql+psycopg", False),
    "psycopg2": ("postgresql+psycopg2", False),
    "psycopg-async": ("postgresql+psycopg", True),
    "asyncpg": ("postgresql+asyncpg", True),
    "aiopg": ("postgresql+aiopg", True),
}


@dataclass
class OutageResult:
    """What one outage cost the pool's callers."""

    driver: str
    kind: str
    outage: float
    """Seconds from the server going away to it accepting again."""
    window: float = 0.0
    """Seconds of the outage during which callers were asking (from 0.6 s in)."""
    attempts: int = 0
    """The pool's failed connect attempts during ``window``."""
    first_checkout: float | None = None
    """Seconds from the server accepting again to the first checkout."""
    first_attempt: float | None = None
    """Seconds from the server accepting again to the start of the connect
    attempt that succeeded (the pacing; the rest is the connect itself)."""
    timeouts: list[float] = field(default_factory=list)
    """How long each caller that got ``PoolTimeout`` had waited."""
    errors: list[str] = field(default_factory=list)
    """Any other exception a caller got."""

    @property
    def rate(self) -> float:
        """Connect attempts per second while the server was away and callers waited."""
        return self.attempts / self.window if self.window else 0.0


class _Calls:
    """Callers' outcomes, shared by the worker threads or tasks."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.successes: list[float] = []
        self.connects: list[float] = []
        self.timeouts: list[float] = []
        self.errors: list[str] = []

    def connected(self, event: Any) -> None:
        with self.lock:
            self.connects.append(time.monotonic() - event.duration)

    def ok(self, at: float) -> None:
        with self.lock:
            self.successes.append(at)

    def failed(self, exc: BaseException, waited: float) -> None:
        with self.lock:
            if isinstance(exc, poolkeeper.PoolTimeout):
                self.timeouts.append(waited)
            else:
                self.errors.append(f"{type(exc).__name__}: {exc}".splitlines()[0])


def _sync_caller(pool: poolkeeper.Pool[Any], calls: _Calls) -> None:
    while not calls.stop.is_set():
        started = time.monotonic()
        try:
            with pool.connection() as conn:
                calls.ok(time.monotonic())
                conn.cursor().execute("SELECT 1")
        except Exception as exc:
            calls.failed(exc, time.monotonic() - started)
        time.sleep(0.01)


async def _async_caller(pool: poolkeeper.AsyncPool[Any], calls: _Calls) -> None:
    while not calls.stop.is_set():
        started = time.monotonic()
        try:
            async with pool.connection() as conn:
                calls.ok(time.monotonic())
                await _aquery(conn)
        except Exception as exc:
            calls.failed(exc, time.monotonic() - started)
        await asyncio.sleep(0.01)


async def _aquery(conn: Any) -> None:
    if hasattr(conn, "fetchval"):  # asyncpg
        await conn.fetchval("SELECT 1")
    elif type(conn).__module__.startswith("psycopg"):
        await conn.execute("SELECT 1")
    else:  # aiopg
        cur = await conn.cursor()
        await cur.execute("SELECT 1")
        cur.close()


class _Fault:
    """Take the server away and bring it back; tell when it accepts again."""

    def __init__(self, kind: str, cluster: PgCluster, proxy: FaultProxy | None):
        self.kind, self.cluster, self.proxy = kind, cluster, proxy

    def down(self) -> None:
        if self.proxy is not None:
            self.proxy.reset()
        else:
            self.cluster.stop("immediate")

    def up(self) -> float:
        """Bring the server back; return the instant it accepted a connection."""
        if self.proxy is not None:
            self.proxy.pass_through()
            return time.monotonic()
        accepted: list[float] = []
        probe = threading.Thread(target=self._probe, args=(accepted,), daemon=True)
        probe.start()
        self.cluster.start()
        probe.join(10.0)
        return accepted[0] if accepted else time.monotonic()

    def _probe(self, accepted: list[float]) -> None:
        dsn = self.cluster.url(application_name="pk-probe", connect_timeout=2)
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            try:
                psycopg.connect(dsn).close()
            except psycopg.Error:
                time.sleep(0.005)
                continue
            accepted.append(time.monotonic())
            return


def _wait_for_failure(pool: Any, not_before: float) -> None:
    """Return right after the pool's next failed connect past ``not_before``."""
    while time.monotonic() < not_before:
        time.sleep(0.005)
    seen = pool.stats().connect_errors
    deadline = time.monotonic() + 10.0
    while pool.stats().connect_errors == seen and time.monotonic() < deadline:
        time.sleep(0.002)


def _finish(
    result: OutageResult, calls: _Calls, gone_at: float, back_at: float
) -> None:
    later = [t for t in calls.successes if t >= back_at]
    result.first_checkout = min(later) - back_at if later else None
    began = [t for t in calls.connects if t >= back_at - 0.005]
    result.first_attempt = min(began) - back_at if began else None
    result.outage = back_at - gone_at
    result.window = back_at - gone_at - 0.6
    result.timeouts = list(calls.timeouts)
    result.errors = list(calls.errors)


def run_outage(
    driver: str,
    kind: str,
    outage: float,
    cluster: PgCluster,
    proxy: FaultProxy | None = None,
    **pool_args: Any,
) -> OutageResult:
    """Take a warm pool of ``driver`` through one outage of about ``outage`` s.

    Callers start asking once the pool's idle connection is known dead (it
    is pinged on checkout after 0.5 s idle): 0.6 s into the outage.
    """
    scheme, is_async = DRIVERS[driver]
    port = proxy.port if proxy is not None else None
    url = cluster.url(application_name=f"pk-pacing-{driver}", port=port)
    url = url.replace("postgresql://", f"{scheme}://", 1)
    fault = _Fault(kind, cluster, proxy)
    args: dict[str, Any] = {"min_size": 1, "max_size": 4}
    args.update(timeout=CALLER_TIMEOUT, **pool_args)
    if is_async:
        return asyncio.run(_run_async(driver, kind, outage, url, fault, args))
    result = OutageResult(driver, kind, outage)
    calls = _Calls()
    with poolkeeper.Pool(url, **args) as pool:
        pool.open(wait=True)
        with pool.connection():
            pass
        pool.on("connect", calls.connected)
        gone_at = time.monotonic()
        fault.down()
        time.sleep(0.6)
        errors0 = pool.stats().connect_errors
        workers = [
            threading.Thread(target=_sync_caller, args=(pool, calls), daemon=True)
            for _ in range(CALLERS)
        ]
        for worker in workers:
            worker.start()
        _wait_for_failure(pool, gone_at + outage)
        result.attempts = pool.stats().connect_errors - errors0
        back_at = fault.up()
        _settle_calls(calls, back_at, time.sleep)
        calls.stop.set()
        for worker in workers:
            worker.join(5.0)
        _finish(result, calls, gone_at, back_at)
    return result


async def _run_async(
    driver: str, kind: str, outage: float, url: str, fault: _Fault, args: Any
) -> OutageResult:
    result = OutageResult(driver, kind, outage)
    calls = _Calls()
    async with poolkeeper.AsyncPool(url, **args) as pool:
        await pool.open(wait=True)
        async with pool.connection():
            pass
        pool.on("connect", calls.connected)
        gone_at = time.monotonic()
        await asyncio.to_thread(fault.down)
        await asyncio.sleep(0.6)
        errors0 = pool.stats().connect_errors
        tasks = [
            asyncio.create_task(_async_caller(pool, calls)) for _ in range(CALLERS)
        ]
        await asyncio.to_thread(_wait_for_failure, pool, gone_at + outage)
        result.attempts = pool.stats().connect_errors - errors0
        back_at = await asyncio.to_thread(fault.up)
        await _asettle_calls(calls, back_at)
        calls.stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 5.0)
        _finish(result, calls, gone_at, back_at)
    return result


def _settle_calls(
    calls: _Calls, back_at: float, sleep: Callable[[float], None]
) -> None:
    """Let the callers run until one succeeded after ``back_at`` (at most 5 s)."""
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        with calls.lock:
            if any(t >= back_at for t in calls.successes):
                break
        sleep(0.01)
    sleep(0.1)


async def _asettle_calls(calls: _Calls, back_at: float) -> None:
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        with calls.lock:
            if any(t >= back_at for t in calls.successes):
                break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
