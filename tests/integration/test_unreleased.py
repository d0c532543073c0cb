"""acquire() without release(): the slot comes back, and the pool says where.

On every driver, sync and async pools, against the real servers:

* two ``with pool.acquire() as conn:`` blocks on a pool of 2, then a third
  checkout that succeeds at once (on threads, the driver's own ``with``
  used to close the connection, or keep it checked out, and the third caller
  waited for its whole timeout);
* a connection dropped without release (``del conn; gc.collect()``) is taken
  back, with a :class:`~poolkeeper.ConnectionLeakWarning` attributed to the
  line that acquired it;
* a connection closed by its user without release is taken back too, and its
  late ``release()`` is accepted;
* a caller already waiting on a full pool is served as soon as a connection
  is dropped, or closed by its holder (released or not).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import time
import warnings
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest

import poolkeeper
from tests.integration import test_pool_drivers
from tests.integration.test_pool_drivers import Target, _close, _make_pool, _scalar
from tests.support.generic_dbapi import bare_connect
from tests.support.waiting import asettle

#: The per-driver fixture (one connection URL per driver, cleaned up after).
target = test_pool_drivers.target

pytestmark = [
    pytest.mark.integration,
    pytest.mark.anyio,
    # A driver may say that a connection was garbage collected while open:
    # that is what these tests do on purpose.
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

#: Generous next to "at once": the pools below time out after 10 s.
AT_ONCE = 2.0


async def _acquire(pool: Any) -> Any:
    if isinstance(pool, poolkeeper.AsyncPool):
        return await pool.acquire()  # acquiring site (async)
    return pool.acquire()  # acquiring site (sync)


def _acquire_lines() -> set[int]:
    source, first = inspect.getsourcelines(_acquire)
    return {first + i for i, line in enumerate(source) if "acquiring site" in line}


async def _release(pool: Any, conn: Any) -> None:
    if isinstance(pool, poolkeeper.AsyncPool):
        await pool.release(conn)
    else:
        pool.release(conn)


async def _close_conn(conn: Any) -> None:
    result = conn.close()
    if inspect.isawaitable(result):
        await result


async def _drop(conn_holder: list[Any]) -> None:
    """Drop the last reference to a connection and collect it.

    aiopg's connection, collected while open, fails an internal future that
    nobody awaits, which the event loop reports (aiopg's own noise, also
    without a pool): it is kept out of the test runner's loop errors.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    handler = loop.get_exception_handler() if loop else None
    if loop is not None:
        loop.set_exception_handler(lambda loop, context: None)
    try:
        conn_holder.clear()
        gc.collect()
        await asyncio.sleep(0)
    finally:
        if loop is not None:
            loop.set_exception_handler(handler)


async def _timed_acquire(pool: Any) -> tuple[Any, float]:
    started = time.monotonic()
    conn = await _acquire(pool)
    return conn, time.monotonic() - started


def _check_warning(record: list[warnings.WarningMessage], how: str) -> None:
    leaks = [
        w for w in record if issubclass(w.category, poolkeeper.ConnectionLeakWarning)
    ]
    assert len(leaks) == 1, [str(w.message) for w in record]
    warning = leaks[0]
    # Attributed to the acquiring line, which the message names too.
    assert warning.filename == __file__
    assert warning.lineno in _acquire_lines()
    message = str(warning.message)
    assert f"acquired at {__file__}:{warning.lineno} was {how}" in message
    assert "release()" in message


async def test_with_acquire_gives_the_connection_back(target: Target) -> None:
    case = target.case
    if case.generic and not case.is_async:
        # A callable returning the driver's own connection (the generic
        # wrapper has no with block at all).
        pool: Any = poolkeeper.Pool(
            bare_connect(case.package, target.url), min_size=0, max_size=2, timeout=10
        )
        if _warns_with_acquire_leaks(pool):  # psycopg2: a C type, said at once
            await _close(pool)
            return
    else:
        pool = _make_pool(target, min_size=0, max_size=2, timeout=10)
    try:
        for _ in range(2):
            if isinstance(pool, poolkeeper.AsyncPool):
                async with pool.acquire() as conn:
                    assert await _scalar(case, conn, "SELECT 1") == 1
            else:
                with pool.acquire() as conn:
                    assert await _scalar(case, conn, "SELECT 1") == 1
        del conn
        third, took = await _timed_acquire(pool)
        assert took < AT_ONCE
        assert await _scalar(case, third, "SELECT 2") == 2
        stats = pool.stats()
        assert (stats.in_use, stats.leaks) == (1, 0)
        await _release(pool, third)
        # Back in the pool and reused: no connection was closed or lost.
        assert pool.stats().connections_closed == 0
    finally:
        await _close(pool)


def _warns_with_acquire_leaks(pool: poolkeeper.Pool[Any]) -> bool:
    """Whether the first connect warned that ``with pool.acquire()`` would leak.

    Said once per pool, for a connection class that cannot be given a with
    block that returns it (a C type), never for one that can.
    """
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for _ in range(2):  # two connections, one warning
            first, second = pool.acquire(), pool.acquire()
            pool.release(first)
            pool.release(second)
    said = [str(w.message) for w in record if w.category is poolkeeper.PoolWarning]
    if not said:
        return False
    assert len(said) == 1, said
    assert "'with pool.acquire() as conn:'" in said[0]
    assert "pool.connection()" in said[0]
    assert "connection_factory=" in said[0]
    return True


@contextlib.asynccontextmanager
async def _one_slot(target: Target) -> AsyncIterator[tuple[Any, list[Any]]]:
    """A pool of one connection, and the warnings recorded while it is open."""
    pool = _make_pool(target, min_size=0, max_size=1, timeout=10)
    try:
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            yield pool, record
    finally:
        await _close(pool)


async def test_dropped_connection_is_taken_back_with_a_warning(
    target: Target,
) -> None:
    case = target.case
    async with _one_slot(target) as (pool, record):
        held = [await _acquire(pool)]
        assert await _scalar(case, held[0], "SELECT 1") == 1
        await _drop(held)
        conn, took = await _timed_acquire(pool)
        assert took < AT_ONCE
        assert await _scalar(case, conn, "SELECT 3") == 3
        _check_warning(record, "dropped (garbage collected)")
        stats = pool.stats()
        assert (stats.size, stats.in_use, stats.leaks) == (1, 1, 1)
        assert stats.closed_by_reason["leaked"] == 1
        await _release(pool, conn)


async def test_closed_connection_is_taken_back_with_a_warning(
    target: Target,
) -> None:
    case = target.case
    async with _one_slot(target) as (pool, record):
        closed = await _acquire(pool)
        await _close_conn(closed)
        conn, took = await _timed_acquire(pool)
        assert took < AT_ONCE
        assert conn is not closed
        assert await _scalar(case, conn, "SELECT 4") == 4
        _check_warning(record, "closed")
        # A late release of the closed connection is accepted quietly.
        await _release(pool, closed)
        await _release(pool, conn)
        stats = pool.stats()
        assert (stats.size, stats.in_use, stats.leaks) == (1, 0, 1)
        with pytest.raises(poolkeeper.PoolError, match="not checked out"):
            await _release(pool, conn)


async def test_waiter_gets_a_dropped_connections_slot(target: Target) -> None:
    """A caller already waiting is served as soon as the dropped connection is
    collected, not at its timeout."""
    case = target.case
    async with _one_slot(target) as (pool, _):
        held = [await _acquire(pool)]
        if case.is_async:
            waiter = asyncio.ensure_future(_timed_acquire(pool))
        else:  # a thread of its own waits
            waiter = asyncio.ensure_future(
                asyncio.to_thread(lambda: asyncio.run(_timed_acquire(pool)))
            )
        await asyncio.sleep(0.2)
        assert not waiter.done()
        await _drop(held)
        conn, took = await asyncio.wait_for(waiter, AT_ONCE + 0.2)
        assert took < 0.2 + AT_ONCE
        assert await _scalar(case, conn, "SELECT 5") == 5
        await _release(pool, conn)


@pytest.mark.parametrize("released", [False, True], ids=["closed", "closed-released"])
async def test_waiter_gets_a_closed_connections_slot(
    target: Target, released: bool
) -> None:
    """A caller already waiting on a full pool is served as soon as the
    holder closes its connection (and releases it, or not), not at the next
    housekeeping round (5 s later) nor at its timeout."""
    case = target.case
    async with _one_slot(target) as (pool, record):
        holder = await _acquire(pool)
        if case.is_async:
            waiter = asyncio.ensure_future(_timed_acquire(pool))
        else:  # a thread of its own waits
            waiter = asyncio.ensure_future(
                asyncio.to_thread(lambda: asyncio.run(_timed_acquire(pool)))
            )
        await asyncio.sleep(0.2)
        assert not waiter.done()
        closed_at = time.monotonic()
        await _close_conn(holder)
        if released:
            await _release(pool, holder)
        conn, _ = await asyncio.wait_for(waiter, AT_ONCE)
        assert time.monotonic() - closed_at < 1.0
        assert conn is not holder
        assert await _scalar(case, conn, "SELECT 6") == 6
        await _release(pool, conn)
        if not released:
            # Reported once the slot is taken back, perhaps just after the
            # replacement reached the waiter (in the pool's watcher).
            await asettle(lambda: bool(record), within=AT_ONCE)
            _check_warning(record, "closed")
            await _release(pool, holder)  # late, accepted quietly
        stats = pool.stats()
        assert (stats.size, stats.in_use) == (1, 0)


async def test_a_connection_reading_a_result_is_not_taken_back(target: Target) -> None:
    """Only a closed connection is taken back: mysqlclient's is_broken() also
    polls the socket, and an answer its holder has yet to read must not make
    the pool take the connection when the pool is full (through a connect
    callable too, whose adapter is found after the first connect)."""
    if target.case.id != "mysqldb":
        pytest.skip("mysqlclient's send_query() leaves the answer on the socket")
    import MySQLdb  # type: ignore[import-untyped]

    parts = urlsplit(target.url)

    def connect() -> Any:
        return MySQLdb.connect(
            host=parts.hostname,
            port=parts.port or 3306,
            user=parts.username,
            password=parts.password or "",
            database=parts.path.lstrip("/"),
        )

    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        with poolkeeper.Pool(connect, min_size=0, max_size=1) as pool:
            conn = pool.acquire()
            conn.send_query("SELECT 7")  # the answer waits on the socket, unread
            await asyncio.sleep(0.1)
            with pytest.raises(poolkeeper.PoolTimeout):
                pool.acquire(timeout=0.2)
            conn.read_query_result()
            assert conn.store_result().fetch_row() == ((7,),)
            pool.release(conn)
    assert not record, [str(w.message) for w in record]


def test_sync_watcher_ending_does_not_swallow_a_new_waiters_watch(
    postgres_url: str,
) -> None:
    """Threads: the closed-connection watcher decides to stop (nobody
    waits) and only then, under the lock again, clears its flag. A caller
    arriving in between saw the watcher running, asked it to look once
    more, and was dropped with that request: nobody watched while it waited,
    so a holder's close() reached it only at the next housekeeping round
    (here: its 3 s timeout). The window is widened by delaying the watcher
    thread right after it released the lock, having found nobody waiting."""
    import threading

    url = postgres_url.replace("postgresql://", "postgresql+psycopg://", 1)
    pool = poolkeeper.Pool(url, min_size=0, max_size=1, timeout=3.0)
    pool.open()
    real_lock = pool._lock
    gap = threading.Event()  # the watcher found nobody waiting

    class WidenedLock:
        def __enter__(self) -> None:
            real_lock.acquire()

        def __exit__(self, *exc: object) -> None:
            real_lock.release()
            me = threading.current_thread().name
            if "closed-watch" in me and not pool._state.waiting() and not gap.is_set():
                # Released: between its decision to stop and its finally.
                gap.set()
                time.sleep(0.5)

        def __getattr__(self, name: str) -> Any:
            return getattr(real_lock, name)

    pool._lock = WidenedLock()  # type: ignore[assignment]
    try:
        holder = pool.acquire()
        # A first caller starts the watcher and gives up.
        with pytest.raises(poolkeeper.PoolTimeout):
            pool.acquire(timeout=0.1)
        assert gap.wait(2.0)
        # The watcher is between its decision and its exit: a second caller.
        served: list[float] = []

        def second() -> None:
            started = time.monotonic()
            try:
                conn = pool.acquire(timeout=3.0)
            except poolkeeper.PoolTimeout:
                return
            served.append(time.monotonic() - started)
            pool.release(conn)

        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.15)
        holder.close()  # closed by its holder, never released
        thread.join(5.0)
        assert served, "the second caller was never served"
        assert served[0] < 1.5, served
    finally:
        pool._lock = real_lock
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pool.close()
