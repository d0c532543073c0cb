"""poolkeeper's SQLAlchemy pools behave as QueuePool where SQLAlchemy users rely on it.

Each test reproduces, outside SQLAlchemy's own suite, a behaviour its suite
checks (issue 15): connect errors reach the caller at once as the dialect's
own exception, ``pool_pre_ping`` follows SQLAlchemy's rules, ``dispose()``
leaves the pool usable, the dialect's first-connect initialisation comes
before any other connection, the pool grows one checkout at a time and
keeps ``pool_size`` idle, ``pool_timeout=0`` connects, QueuePool's counters
exist, and a driver connection without ``closed``/``open`` works.
Everything runs against the real PostgreSQL.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import psycopg
import pytest
from sqlalchemy import cast, create_engine, event, exc, select, text
from sqlalchemy.dialects.postgresql import HSTORE
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.util.concurrency import greenlet_spawn

from poolkeeper.sqlalchemy import AsyncPool, Pool
from tests.integration.frameworks.conftest import backends, terminate, with_driver
from tests.support.faultproxy import FaultProxy

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

SYNC_DRIVERS = ["psycopg", "psycopg2"]


def _engine(url: str, driver: str, **kw: Any) -> Engine:
    kw.setdefault("pool_timeout", 10)
    return create_engine(with_driver(url, driver), poolclass=Pool, **kw)


def _app_engine(url: str, driver: str, app: str, **kw: Any) -> Engine:
    """An engine whose connections show as ``app`` in pg_stat_activity."""
    return _engine(url, driver, connect_args={"application_name": app}, **kw)


@pytest.fixture
def errors() -> list[Any]:
    """The ``handle_error`` contexts an engine reported (see :func:`_listen`)."""
    return []


def _listen(engine: Any, errors: list[Any]) -> None:
    event.listen(getattr(engine, "sync_engine", engine), "handle_error", errors.append)


# -- 1. connect errors ----------------------------------------------------------


def _missing_db(url: str) -> str:
    return url.rsplit("/", 1)[0] + "/pk_no_such_database"


@pytest.mark.parametrize("driver", SYNC_DRIVERS)
def test_connect_error_reaches_the_caller_at_once(
    postgres_url: str, driver: str, errors: list[Any]
) -> None:
    engine = _engine(_missing_db(postgres_url), driver)
    _listen(engine, errors)
    try:
        started = time.monotonic()
        with pytest.raises(exc.OperationalError, match="pk_no_such_database"):
            engine.connect()
        assert time.monotonic() - started < 5
        assert len(errors) == 1
        assert errors[0].is_disconnect is False
        assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    finally:
        engine.dispose()


@pytest.mark.parametrize("driver", SYNC_DRIVERS)
def test_bad_isolation_level_raises_argument_error(
    postgres_url: str, driver: str
) -> None:
    engine = _engine(postgres_url, driver, isolation_level="FOO")
    try:
        with pytest.raises(exc.ArgumentError, match="FOO"):
            engine.connect()
        # Nothing is left behind: the failed record's connection was closed.
        assert engine.pool.poolkeeper_pool.stats().size == 0  # type: ignore[attr-defined]
    finally:
        engine.dispose()


@pytest.mark.anyio
async def test_async_connect_error_reaches_the_caller_at_once(
    postgres_url: str, errors: list[Any]
) -> None:
    engine = create_async_engine(
        with_driver(_missing_db(postgres_url), "asyncpg"),
        poolclass=AsyncPool,
        pool_timeout=10,
    )
    _listen(engine, errors)
    try:
        started = time.monotonic()
        with pytest.raises(exc.DBAPIError, match="pk_no_such_database"):
            await engine.connect()
        assert time.monotonic() - started < 5
        assert len(errors) == 1
    finally:
        await engine.dispose()


@pytest.mark.parametrize("driver", SYNC_DRIVERS)
def test_error_in_first_connect_initialisation_propagates(
    postgres_url: str, driver: str
) -> None:
    engine = _engine(postgres_url, driver)
    calls = []

    def explode(*args: Any) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise exc.DBAPIError("initialize exploded", None, Exception("boom"))

    engine.dialect.initialize = explode  # type: ignore[method-assign,assignment]
    try:
        with pytest.raises(exc.DBAPIError, match="initialize exploded"):
            engine.connect()
        # SQLAlchemy retries the initialisation on the next connect.
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar() == 1
        assert len(calls) == 2
    finally:
        engine.dispose()


class _FailingInitialize:
    """Replaces ``engine``'s dialect ``initialize``: raises while ``fail`` is set."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.real = engine.dialect.initialize
        self.calls = 0
        self.fail = True
        engine.dialect.initialize = self  # type: ignore[method-assign]

    def __call__(self, connection: Any) -> None:
        self.calls += 1
        if self.fail:
            raise TypeError("initialize exploded")
        self.real(connection)

    def counts(self) -> tuple[int, int]:
        """The pool's (checked out, checked in); dispose() makes a new pool."""
        pool: Any = self.engine.pool
        return pool.checkedout(), pool.checkedin()


@pytest.mark.parametrize("driver", SYNC_DRIVERS)
def test_dialect_initialize_is_retried_until_it_succeeds(
    postgres_url: str, driver: str
) -> None:
    # SQLAlchemy's test_dialect_initialize_retry_if_exception, on a real
    # server and without reading QueuePool's queue: a connection whose
    # first-connect initialisation failed is never pooled, the next connect
    # (dispose() included) initialises again, and once it succeeded no
    # connect initialises any more.
    engine = _engine(postgres_url, driver)
    init = _FailingInitialize(engine)
    try:
        for attempt in range(1, 4):
            if attempt == 3:
                engine.dispose()
            with pytest.raises(TypeError, match="initialize exploded"):
                engine.connect()
            assert (init.calls, init.counts()) == (attempt, (0, 0))
        init.fail = False
        for disposing in (False, False, True):
            if disposing:
                engine.dispose()
            with engine.connect() as conn:
                assert conn.execute(text("SELECT 1")).scalar() == 1
            assert (init.calls, init.counts()) == (4, (0, 1))
    finally:
        engine.dispose()


@pytest.mark.anyio
async def test_async_dialect_initialize_is_retried_until_it_succeeds(
    postgres_url: str,
) -> None:
    engine = create_async_engine(
        with_driver(postgres_url, "asyncpg"), poolclass=AsyncPool, pool_timeout=10
    )
    init = _FailingInitialize(engine.sync_engine)
    try:
        for attempt in range(1, 4):
            if attempt == 3:
                await engine.dispose()
            with pytest.raises(TypeError, match="initialize exploded"):
                await engine.connect()
            assert (init.calls, init.counts()) == (attempt, (0, 0))
        init.fail = False
        for disposing in (False, False, True):
            if disposing:
                await engine.dispose()
            async with engine.connect() as conn:
                assert (await conn.execute(text("SELECT 1"))).scalar() == 1
            assert (init.calls, init.counts()) == (4, (0, 1))
    finally:
        await engine.dispose()


# -- 2. pool_pre_ping -------------------------------------------------------------


@pytest.mark.parametrize("driver", SYNC_DRIVERS)
def test_pre_ping_error_propagates_with_is_pre_ping(
    postgres_url: str, driver: str, errors: list[Any]
) -> None:
    engine = _engine(postgres_url, driver, pool_pre_ping=True)
    _listen(engine, errors)
    dbapi = engine.dialect.loaded_dbapi
    try:
        engine.connect().close()

        def failing_ping(dbapi_connection: Any) -> bool:
            raise dbapi.ProgrammingError("ping went wrong, not a disconnect")

        engine.dialect.do_ping = failing_ping  # type: ignore[method-assign]
        with pytest.raises(exc.ProgrammingError, match="ping went wrong"):
            engine.connect()
        # First from the ping itself; then, as with QueuePool, once more
        # from the engine's connect (is_pre_ping=False).
        assert (errors[0].is_pre_ping, errors[0].is_disconnect) == (True, False)
        assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    finally:
        engine.dispose()


@pytest.mark.parametrize("driver", SYNC_DRIVERS)
def test_pre_ping_replaces_a_killed_connection_and_fires_handle_error(
    postgres_url: str,
    driver: str,
    errors: list[Any],
    admin: psycopg.Connection[tuple[object, ...]],
    app_name: str,
) -> None:
    # validate="never": SQLAlchemy's pre-ping, not poolkeeper's idle validation
    # (after validate_after on a loaded machine), must meet the dead session.
    engine = _app_engine(
        postgres_url,
        driver,
        app_name,
        pool_pre_ping=True,
        pool_options={"validate": "never"},
    )
    _listen(engine, errors)
    try:
        engine.connect().close()
        assert terminate(admin, app_name) == 1
        started = time.monotonic()
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar() == 1
        assert time.monotonic() - started < 5
        assert [(e.is_pre_ping, e.is_disconnect) for e in errors] == [(True, True)]
    finally:
        engine.dispose()


@pytest.mark.parametrize("driver", SYNC_DRIVERS)
def test_pre_ping_with_the_database_down_raises_at_once(
    postgres_url: str, driver: str, errors: list[Any]
) -> None:
    # The server goes away behind a TCP proxy: every ping and every connect
    # fails. The caller gets the driver's OperationalError at once (as with
    # QueuePool), not a TimeoutError after pool_timeout.
    url = make_url(with_driver(postgres_url, driver))
    with FaultProxy((url.host or "127.0.0.1", url.port or 5432)) as proxy:
        proxied = url.set(host="127.0.0.1", port=proxy.port)
        engine = create_engine(
            proxied,
            poolclass=Pool,
            pool_pre_ping=True,
            pool_timeout=10,
            pool_options={"validate": "never"},  # the pre-ping meets the cut link
        )
        _listen(engine, errors)
        try:
            engine.connect().close()
            proxy.reset()  # live links cut, new ones reset
            for _ in range(2):
                started = time.monotonic()
                with pytest.raises(exc.OperationalError):
                    engine.connect()
                assert time.monotonic() - started < 5
            assert errors and errors[0].is_pre_ping and errors[0].is_disconnect
            assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
            proxy.pass_through()
            with engine.connect() as conn:
                assert conn.execute(text("SELECT 1")).scalar() == 1
        finally:
            engine.dispose()


# -- 3. dispose ---------------------------------------------------------------------


@pytest.mark.parametrize("driver", SYNC_DRIVERS)
def test_pool_dispose_leaves_the_pool_usable(postgres_url: str, driver: str) -> None:
    engine = _engine(postgres_url, driver)
    try:
        engine.connect().close()
        engine.pool.dispose()
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()


@pytest.mark.anyio
async def test_async_pool_dispose_leaves_the_pool_usable(postgres_url: str) -> None:
    engine = create_async_engine(
        with_driver(postgres_url, "asyncpg"), poolclass=AsyncPool
    )
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        # Pool.dispose() awaits through SQLAlchemy's greenlet bridge.
        await greenlet_spawn(engine.sync_engine.pool.dispose)
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar() == 1
    finally:
        await engine.dispose()


# -- 4. first-connect initialisation ---------------------------------------------------


def test_hstore_registered_on_concurrent_first_checkouts(postgres_url: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS hstore")
    # A fresh engine (fresh dialect) each round: the race is at first use.
    for _ in range(3):
        engine = _engine(postgres_url, "psycopg", pool_size=5)
        barrier = threading.Barrier(5, timeout=10)
        results: list[Any] = []

        def work(
            engine: Engine = engine,
            barrier: threading.Barrier = barrier,
            results: list[Any] = results,
        ) -> None:
            barrier.wait()
            try:
                with engine.connect() as conn:
                    # Hold it, so the five checkouts get five connections.
                    value = conn.execute(select(cast({"k": "v"}, HSTORE))).scalar()
                    time.sleep(0.2)
                results.append(value)
            except Exception as error:  # reported below
                results.append(error)

        threads = [threading.Thread(target=work) for _ in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)
        engine.dispose()
        assert results == [{"k": "v"}] * 5


# -- 5. lazy growth, pool_size kept idle -------------------------------------------------


@pytest.mark.parametrize("driver", SYNC_DRIVERS)
def test_pool_grows_lazily_and_closes_overflow_on_return(
    postgres_url: str,
    driver: str,
    admin: psycopg.Connection[tuple[object, ...]],
    app_name: str,
) -> None:
    engine = _app_engine(postgres_url, driver, app_name, pool_size=2, max_overflow=2)
    pool: Any = engine.pool
    try:
        with engine.connect():
            time.sleep(0.3)  # room for any background opening to show
            assert backends(admin, app_name) == 1
        conns = [engine.connect() for _ in range(4)]
        assert (pool.checkedout(), pool.overflow(), pool.checkedin()) == (4, 2, 0)
        for conn in conns:
            conn.close()
        assert (pool.checkedout(), pool.overflow(), pool.checkedin()) == (0, 0, 2)
        # A closed backend leaves pg_stat_activity a moment after the close.
        deadline = time.monotonic() + 5
        while backends(admin, app_name) > 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert backends(admin, app_name) == 2
        assert pool.size() == 2
        assert "Pool size: 2  Connections in pool: 2" in pool.status()
    finally:
        engine.dispose()


@pytest.mark.anyio
async def test_async_pool_grows_lazily_and_closes_overflow_on_return(
    postgres_url: str, admin: psycopg.Connection[tuple[object, ...]], app_name: str
) -> None:
    engine = create_async_engine(
        with_driver(postgres_url, "asyncpg"),
        poolclass=AsyncPool,
        pool_size=2,
        max_overflow=2,
        pool_timeout=10,
        connect_args={"server_settings": {"application_name": app_name}},
    )
    pool: Any = engine.sync_engine.pool
    try:
        async with engine.connect():
            await asyncio.sleep(0.3)  # room for any background opening to show
            assert backends(admin, app_name) == 1
        conns = [await engine.connect() for _ in range(4)]
        assert (pool.checkedout(), pool.overflow(), pool.checkedin()) == (4, 2, 0)
        for conn in conns:
            await conn.close()
        assert (pool.checkedout(), pool.overflow(), pool.checkedin()) == (0, 0, 2)
        deadline = time.monotonic() + 5
        while backends(admin, app_name) > 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert backends(admin, app_name) == 2
        assert pool.size() == 2
        assert "Pool size: 2  Connections in pool: 2" in pool.status()
    finally:
        await engine.dispose()


@pytest.mark.anyio
async def test_async_invalidated_connections_leave_the_pool(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    engine = create_async_engine(
        with_driver(postgres_url, "asyncpg"), poolclass=AsyncPool, pool_timeout=5
    )
    pool: Any = engine.sync_engine.pool
    try:
        async with engine.connect() as conn:
            # Soft: closed and replaced at its next checkout (_claim).
            (await conn.get_raw_connection()).invalidate(soft=True)
        for _ in range(3):
            async with engine.connect() as conn:
                assert (await conn.execute(text("SELECT 1"))).scalar() == 1
                await conn.invalidate()  # hard: closed on the spot, out on return
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT 2"))).scalar() == 2
        assert (pool.checkedout(), pool.checkedin()) == (0, 1)
        assert not [r for r in caplog.records if r.name.startswith("poolkeeper")]
    finally:
        await engine.dispose()


# -- 6. pool_timeout=0, connections without closed/open -----------------------------------


@pytest.mark.parametrize("driver", SYNC_DRIVERS)
def test_pool_timeout_zero_connects_on_an_empty_pool(
    postgres_url: str, driver: str
) -> None:
    engine = _engine(postgres_url, driver, pool_timeout=0, pool_size=1, max_overflow=0)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar() == 1
            # Full now: a second checkout fails at once, as with QueuePool.
            with pytest.raises(exc.TimeoutError):
                engine.connect()
    finally:
        engine.dispose()


class _BareConnection:
    """A DB-API connection with only the PEP 249 methods (no ``closed``/``open``)."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def cursor(self, *args: Any, **kw: Any) -> Any:
        return self._conn.cursor(*args, **kw)

    def commit(self) -> None:
        self._conn.commit()

    def rollback(self) -> None:
        self._conn.rollback()

    def close(self) -> None:
        self._conn.close()


def test_driver_connection_without_closed_attribute(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    import psycopg2

    dsn = postgres_url.replace("postgresql+psycopg2://", "postgresql://")
    engine = create_engine(
        with_driver(postgres_url, "psycopg2"),
        poolclass=Pool,
        creator=lambda: _BareConnection(psycopg2.connect(dsn)),
        pool_timeout=5,
        _initialize=False,
    )
    pool: Any = engine.pool
    try:
        with engine.connect() as conn:
            # Closed and replaced at its next checkout, which poolkeeper must
            # not hand out again although the driver cannot say it is closed.
            conn.connection.invalidate(soft=True)
        for _ in range(3):
            with engine.connect() as conn:
                cursor = conn.connection.cursor()
                cursor.execute("SELECT 1")
                assert cursor.fetchone() == (1,)
                conn.connection.invalidate()  # hard: closed on the spot
        with engine.connect() as conn:
            cursor = conn.connection.cursor()
            cursor.execute("SELECT 2")
            assert cursor.fetchone() == (2,)
        assert (pool.checkedout(), pool.checkedin()) == (0, 1)
        # Connections SQLAlchemy closed leave the pool as such: none is
        # taken for open (reset on return, handed out again).
        assert not [r for r in caplog.records if r.name.startswith("poolkeeper")]
    finally:
        engine.dispose()
