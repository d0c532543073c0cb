"""The psycopg2 and asyncpg drop-in layers against the real PostgreSQL server.

The article's two examples run as written, with only the import line
changed; the rest holds the layers to psycopg2's and asyncpg's documented
behaviour.
"""

from __future__ import annotations

import asyncio
import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import psycopg2
import psycopg2.extensions
import pytest

from poolkeeper.compat import asyncpg as compat_asyncpg
from poolkeeper.compat import psycopg2 as compat_psycopg2
from tests.integration.postgres.conftest import backends, terminate
from tests.support.waiting import asettle, settle

pytestmark = [pytest.mark.integration, pytest.mark.postgres]


@pytest.fixture
def pg2_pool(dsn: str, app_name: str) -> Iterator[compat_psycopg2.SimpleConnectionPool]:
    pool = compat_psycopg2.SimpleConnectionPool(1, 2, dsn, application_name=app_name)
    yield pool
    if not pool.closed:
        pool.closeall()


def _backend_pid(conn: Any) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        pid: int = cur.fetchone()[0]
    conn.rollback()
    return pid


# -- psycopg2 ------------------------------------------------------------------


def test_article_psycopg2_example_runs_unchanged(
    dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    pool: Any = compat_psycopg2  # was: from psycopg2 import pool

    # Database connection details
    database_url = dsn  # was: "postgresql://user:password@host:port/database"
    # Create a connection pool
    pool = pool.SimpleConnectionPool(1, 10, database_url)
    # Get a connection from the pool
    conn = pool.getconn()
    try:
        # Create a cursor object
        cur = conn.cursor()
        # Execute a query
        cur.execute("SELECT 1")
        # Fetch the result
        result = cur.fetchone()
        print(result)
        # Commit the transaction
        conn.commit()
    except Exception as e:
        print(f"Error: {e}")
        conn.rollback()
    finally:
        # Close the cursor
        if cur:
            cur.close()
        # Put the connection back into the pool
        pool.putconn(conn)
    # Close the connection pool
    pool.closeall()

    assert capsys.readouterr().out == "(1,)\n"
    assert pool.closed
    assert conn.closed


def test_minconn_opened_by_the_constructor(dsn: str, app_name: str, admin: Any) -> None:
    pool = compat_psycopg2.ThreadedConnectionPool(2, 4, dsn, application_name=app_name)
    try:
        assert backends(admin, app_name) == 2
        assert (pool.minconn, pool.maxconn) == (2, 4)
        assert pool.pool.stats().size == 2
    finally:
        pool.closeall()
    assert settle(lambda: backends(admin, app_name) == 0)


def test_psycopg2_compat_pool_does_not_warn_about_with_acquire(dsn: str) -> None:
    # Its users lend connections with getconn(): the pool's warning for a
    # bare psycopg2 connection (with pool.acquire() cannot give it back) is
    # not for them.
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        pool = compat_psycopg2.ThreadedConnectionPool(2, 2, dsn)
        try:
            conn = pool.getconn()
            assert type(conn) is psycopg2.extensions.connection
            pool.putconn(conn)
        finally:
            pool.closeall()
    assert not [w for w in record if issubclass(w.category, UserWarning)]


def test_keyword_arguments_reach_psycopg2_connect(app_name: str, dsn: str) -> None:
    parts = urlsplit(dsn)
    pool = compat_psycopg2.SimpleConnectionPool(
        0,
        1,
        host=parts.hostname,
        port=parts.port or 5432,
        user=parts.username,
        dbname=parts.path.lstrip("/"),
        application_name=app_name,
    )
    try:
        conn = pool.getconn()
        with conn.cursor() as cur:
            cur.execute("SHOW application_name")
            assert cur.fetchone() == (app_name,)
        pool.putconn(conn)
    finally:
        pool.closeall()


def test_constructor_raises_the_connect_error() -> None:
    with pytest.raises(psycopg2.OperationalError):
        compat_psycopg2.SimpleConnectionPool(
            1, 2, "postgresql://postgres@127.0.0.1:1/test", connect_timeout=2
        )


def test_getconn_putconn_reuses_the_connection(
    pg2_pool: compat_psycopg2.SimpleConnectionPool,
) -> None:
    conn = pg2_pool.getconn()
    pg2_pool.putconn(conn)
    assert pg2_pool.getconn() is conn
    assert pg2_pool.pool.stats().connections_created == 1


def test_putconn_rolls_back(pg2_pool: compat_psycopg2.SimpleConnectionPool) -> None:
    conn = pg2_pool.getconn()
    with conn.cursor() as cur:
        cur.execute("CREATE TEMP TABLE pk_compat_rb (x int)")
    assert (
        conn.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_INTRANS
    )
    pg2_pool.putconn(conn)
    again = pg2_pool.getconn()
    assert again is conn
    assert again.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_IDLE
    with again.cursor() as cur:
        cur.execute("SELECT to_regclass('pk_compat_rb')")
        assert cur.fetchone() == (None,)


def test_keyed_connections(pg2_pool: compat_psycopg2.SimpleConnectionPool) -> None:
    a = pg2_pool.getconn("a")
    assert pg2_pool.getconn("a") is a  # same key, same connection, no new slot
    b = pg2_pool.getconn(key=("b", 2))
    assert b is not a
    with pytest.raises(compat_psycopg2.PoolError, match="exhausted"):
        pg2_pool.getconn()
    pg2_pool.putconn(a, key="a")
    with pytest.raises(compat_psycopg2.PoolError, match="unkeyed"):
        pg2_pool.putconn(a, key="a")  # already back
    with pytest.raises(compat_psycopg2.PoolError, match="unkeyed"):
        pg2_pool.putconn(b, key="wrong")
    pg2_pool.putconn(b)  # the key is found from the connection
    assert pg2_pool.pool.stats().in_use == 0


def test_exhaustion_raises_at_once(
    pg2_pool: compat_psycopg2.SimpleConnectionPool,
) -> None:
    held = [pg2_pool.getconn(), pg2_pool.getconn()]
    started = time.monotonic()
    with pytest.raises(compat_psycopg2.PoolError, match="connection pool exhausted"):
        pg2_pool.getconn()
    assert time.monotonic() - started < 0.5
    assert compat_psycopg2.PoolError is psycopg2.pool.PoolError
    for conn in held:
        pg2_pool.putconn(conn)


def test_exhaustion_with_timeout_waits(dsn: str, app_name: str) -> None:
    pool = compat_psycopg2.ThreadedConnectionPool(
        1, 1, dsn, application_name=app_name, timeout=5.0
    )
    try:
        conn = pool.getconn()
        timer = threading.Timer(0.2, pool.putconn, (conn,))
        timer.start()
        started = time.monotonic()
        assert pool.getconn() is conn  # waited for it to come back
        assert 0.1 < time.monotonic() - started < 4.0
        timer.join()
        with pytest.raises(compat_psycopg2.PoolError, match="exhausted"):
            pool.getconn(timeout=0.1)  # per-call override
    finally:
        pool.closeall()


def test_putconn_of_an_unknown_connection(
    pg2_pool: compat_psycopg2.SimpleConnectionPool, dsn: str
) -> None:
    stranger = psycopg2.connect(dsn)
    try:
        with pytest.raises(compat_psycopg2.PoolError, match="unkeyed"):
            pg2_pool.putconn(stranger)
    finally:
        stranger.close()
    conn = pg2_pool.getconn()
    pg2_pool.putconn(conn)
    with pytest.raises(compat_psycopg2.PoolError, match="unkeyed"):
        pg2_pool.putconn(conn)  # twice


def test_putconn_close_true(
    pg2_pool: compat_psycopg2.SimpleConnectionPool, app_name: str, admin: Any
) -> None:
    conn = pg2_pool.getconn()
    pg2_pool.putconn(conn, close=True)
    assert conn.closed
    stats = pg2_pool.pool.stats()
    assert stats.connections_closed == 1
    fresh = pg2_pool.getconn()
    assert fresh is not conn and not fresh.closed
    pg2_pool.putconn(fresh)
    assert settle(lambda: backends(admin, app_name) == pg2_pool.pool.stats().size)


def test_closeall_closes_connections_in_use(
    pg2_pool: compat_psycopg2.SimpleConnectionPool, app_name: str, admin: Any
) -> None:
    idle = pg2_pool.getconn()
    pg2_pool.putconn(idle)
    busy = pg2_pool.getconn("busy")
    pg2_pool.closeall()
    assert pg2_pool.closed and busy.closed and idle.closed
    assert settle(lambda: backends(admin, app_name) == 0)
    for call in (pg2_pool.getconn, pg2_pool.closeall, lambda: pg2_pool.putconn(busy)):
        with pytest.raises(compat_psycopg2.PoolError, match="closed"):
            call()


def test_broken_connection_is_replaced(dsn: str, app_name: str, admin: Any) -> None:
    pool = compat_psycopg2.SimpleConnectionPool(
        1, 2, dsn, application_name=app_name, pool_options={"validate": "always"}
    )
    try:
        conn = pool.getconn()
        before = _backend_pid(conn)
        pool.putconn(conn)
        assert terminate(admin, app_name) == 1
        fresh = pool.getconn()  # the dead one is found and replaced, invisibly
        assert _backend_pid(fresh) != before
        pool.putconn(fresh)
        assert pool.pool.stats().closed_by_reason["check"] >= 1
    finally:
        pool.closeall()


def test_threads_share_maxconn_connections(dsn: str, app_name: str, admin: Any) -> None:
    pool = compat_psycopg2.ThreadedConnectionPool(
        1, 3, dsn, application_name=app_name, timeout=30.0
    )
    seen: list[int] = []
    errors: list[BaseException] = []

    def user() -> None:
        try:
            conn = pool.getconn()
            try:
                with conn.cursor() as cur:
                    cur.execute(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE application_name = %s",
                        (app_name,),
                    )
                    seen.append(cur.fetchone()[0])
                    cur.execute("SELECT pg_sleep(0.01)")
            finally:
                pool.putconn(conn)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=user) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert not errors
        assert len(seen) == 20 and max(seen) <= 3
        assert pool.pool.stats().acquires == 20
        assert settle(lambda: backends(admin, app_name) == pool.pool.stats().size)
    finally:
        pool.closeall()


def test_pool_options_reserved_names(dsn: str) -> None:
    with pytest.raises(ValueError, match="max_size"):
        compat_psycopg2.SimpleConnectionPool(1, 2, dsn, pool_options={"max_size": 3})


# -- asyncpg -------------------------------------------------------------------


@pytest.mark.anyio
async def test_article_asyncpg_example_runs_unchanged(
    dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from poolkeeper.compat import asyncpg  # was: import asyncpg

    async def main() -> None:
        # Database connection details
        database_url = dsn  # was: "postgresql://user:password@host:port/database"
        # Create a connection pool
        pool = await asyncpg.create_pool(database_url, min_size=5, max_size=20)
        async with pool.acquire() as connection:
            # Perform asynchronous database operations
            result = await connection.fetch("SELECT 1")
            print(result)
        await pool.close()

    await main()  # was: asyncio.run(main()), the test runs inside a loop already
    assert capsys.readouterr().out == "[<Record ?column?=1>]\n"


def _settings(app_name: str) -> dict[str, Any]:
    return {"server_settings": {"application_name": app_name}}


@pytest.mark.anyio
async def test_asyncpg_sizes_and_shortcuts(dsn: str, app_name: str, admin: Any) -> None:
    async with compat_asyncpg.create_pool(
        dsn, min_size=2, max_size=4, **_settings(app_name)
    ) as pool:
        assert backends(admin, app_name) == 2
        assert (pool.get_size(), pool.get_idle_size()) == (2, 2)
        assert (pool.get_min_size(), pool.get_max_size()) == (2, 4)
        assert not pool.is_closing()
        await pool.execute("CREATE TEMP TABLE IF NOT EXISTS pk_t (x int)")
        assert await pool.fetchval("SELECT 40 + $1::int", 2) == 42
        assert await pool.fetchval("SELECT 1, 2", column=1) == 2
        row = await pool.fetchrow("SELECT 1 AS a, 'b' AS b")
        assert row is not None and (row["a"], row["b"]) == (1, "b")
        rows = await pool.fetch("SELECT generate_series(1, $1::int) AS n", 3)
        assert [r["n"] for r in rows] == [1, 2, 3]
        status = await pool.execute("SELECT 1")
        assert status == "SELECT 1"
        async with pool.acquire() as conn:
            await conn.execute("CREATE TEMP TABLE pk_many (x int)")
            await conn.executemany("INSERT INTO pk_many VALUES ($1)", [(1,), (2,)])
            assert await conn.fetchval("SELECT count(*) FROM pk_many") == 2
    assert pool.is_closing()
    assert settle(lambda: backends(admin, app_name) == 0)


@pytest.mark.anyio
async def test_asyncpg_pool_executemany(dsn: str, app_name: str) -> None:
    table = f"pk_{app_name.replace('-', '_')}"
    async with compat_asyncpg.create_pool(dsn, min_size=1, max_size=2) as pool:
        await pool.execute(f"CREATE TABLE {table} (x int)")
        try:
            await pool.executemany(f"INSERT INTO {table} VALUES ($1)", [(1,), (2,)])
            assert await pool.fetchval(f"SELECT sum(x) FROM {table}") == 3
        finally:
            await pool.execute(f"DROP TABLE {table}")


@pytest.mark.anyio
async def test_asyncpg_acquire_await_and_release(dsn: str) -> None:
    async with compat_asyncpg.create_pool(dsn, min_size=1, max_size=1) as pool:
        conn = await pool.acquire()
        assert pool.get_idle_size() == 0
        started = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            await pool.acquire(timeout=0.1)
        assert time.monotonic() - started < 2.0
        await pool.release(conn)
        await pool.release(conn)  # twice: nothing to do, as in asyncpg
        assert pool.get_idle_size() == 1
        async with pool.acquire(timeout=1.0) as again:
            assert again is conn
        assert pool.get_idle_size() == 1


@pytest.mark.anyio
async def test_asyncpg_release_of_a_foreign_connection(dsn: str) -> None:
    stranger = await asyncpg.connect(dsn)
    try:
        async with compat_asyncpg.create_pool(dsn, min_size=0, max_size=1) as pool:
            with pytest.raises(asyncpg.InterfaceError, match="member"):
                await pool.release(stranger)
    finally:
        await stranger.close()


@pytest.mark.anyio
async def test_asyncpg_uninitialized_and_closed(dsn: str) -> None:
    pool = compat_asyncpg.create_pool(dsn, min_size=0, max_size=1)
    with pytest.raises(asyncpg.InterfaceError, match="not initialized"):
        await pool.acquire()
    assert await pool is pool
    assert await pool.fetchval("SELECT 1") == 1
    await pool.close()
    with pytest.raises(asyncpg.InterfaceError, match="closing"):
        await pool.acquire()
    await pool.close()  # again: nothing to do


@pytest.mark.anyio
async def test_asyncpg_init_setup_and_default_reset(dsn: str) -> None:
    calls: list[str] = []

    async def init(conn: Any) -> None:
        calls.append("init")
        await conn.execute("SET application_name = 'pk-init'")

    async def setup(conn: Any) -> None:
        calls.append("setup")

    async with compat_asyncpg.create_pool(
        dsn, min_size=1, max_size=1, init=init, setup=setup
    ) as pool:
        async with pool.acquire() as conn:
            await conn.execute("SET search_path TO pk_nowhere")
        async with pool.acquire() as again:
            assert again is conn
            # Connection.reset() ran RESET ALL on release, as asyncpg's pool does.
            assert await again.fetchval("SHOW search_path") != "pk_nowhere"
        assert calls == ["init", "setup", "setup"]


@pytest.mark.anyio
async def test_asyncpg_setup_error_closes_the_connection(dsn: str) -> None:
    async def setup(conn: Any) -> None:
        raise RuntimeError("setup failed")

    async with compat_asyncpg.create_pool(
        dsn, min_size=1, max_size=1, setup=setup
    ) as pool:
        with pytest.raises(RuntimeError, match="setup failed"):
            await pool.acquire()
        # As asyncpg: not reused; the pool opens another to keep min_size.
        stats = pool.pool.stats()
        assert stats.in_use == 0
        assert stats.connections_closed == 1
        assert await asettle(lambda: pool.get_idle_size() == 1, within=5.0)


@pytest.mark.anyio
async def test_asyncpg_custom_reset(dsn: str) -> None:
    resets: list[Any] = []

    async def reset(conn: Any) -> None:
        resets.append(conn)

    async with compat_asyncpg.create_pool(
        dsn, min_size=1, max_size=1, reset=reset
    ) as pool:
        async with pool.acquire() as conn:
            await conn.execute("SET search_path TO pk_kept")
        async with pool.acquire() as again:
            # A custom reset replaces Connection.reset(): the setting survives.
            assert await again.fetchval("SHOW search_path") == "pk_kept"
        assert resets == [conn, conn]


@pytest.mark.anyio
async def test_asyncpg_max_queries_retires_connections(dsn: str) -> None:
    async with compat_asyncpg.create_pool(
        dsn, min_size=1, max_size=1, max_queries=2
    ) as pool:
        pids = [await pool.fetchval("SELECT pg_backend_pid()") for _ in range(3)]
        assert pids[0] == pids[1] != pids[2]
        assert pool.pool.stats().closed_by_reason["uses"] == 1


@pytest.mark.anyio
async def test_asyncpg_argument_checks(dsn: str) -> None:
    with pytest.raises(ValueError, match="max_queries"):
        compat_asyncpg.create_pool(dsn, max_queries=0)
    with pytest.raises(ValueError, match="max_inactive"):
        compat_asyncpg.create_pool(dsn, max_inactive_connection_lifetime=-1)
    with pytest.raises(ValueError, match="min_size"):
        compat_asyncpg.create_pool(dsn, min_size=3, max_size=2)


@pytest.mark.anyio
async def test_asyncpg_initialization_raises_the_connect_error() -> None:
    pool = compat_asyncpg.create_pool(
        "postgresql://postgres@127.0.0.1:1/test", min_size=1, timeout=2
    )
    with pytest.raises(ConnectionRefusedError):
        await pool
    await pool.close()


@pytest.mark.anyio
async def test_asyncpg_close_waits_for_release(dsn: str) -> None:
    pool = await compat_asyncpg.create_pool(dsn, min_size=1, max_size=2)
    conn = await pool.acquire()
    closing = asyncio.create_task(pool.close())
    await asyncio.sleep(0.1)
    assert not closing.done() and pool.is_closing()
    with pytest.raises(asyncpg.InterfaceError, match="closing"):
        await pool.acquire()
    await pool.release(conn)
    await asyncio.wait_for(closing, 5.0)
    assert pool.get_size() == 0


@pytest.mark.anyio
async def test_asyncpg_terminate(dsn: str, app_name: str, admin: Any) -> None:
    pool = await compat_asyncpg.create_pool(
        dsn, min_size=2, max_size=2, **_settings(app_name)
    )
    held = await pool.acquire()
    pool.terminate()
    assert held.is_closed()
    await pool.release(held)  # already dropped: nothing to do
    await pool.close()  # waits for the rest of the shutdown
    assert pool.get_size() == 0
    assert settle(lambda: backends(admin, app_name) == 0)


@pytest.mark.anyio
async def test_asyncpg_broken_connection_is_replaced(
    dsn: str, app_name: str, admin: Any
) -> None:
    async with compat_asyncpg.create_pool(
        dsn,
        min_size=1,
        max_size=1,
        pool_options={"validate": "always"},
        **_settings(app_name),
    ) as pool:
        before = await pool.fetchval("SELECT pg_backend_pid()")
        assert terminate(admin, app_name) == 1
        after = await pool.fetchval("SELECT pg_backend_pid()")
        assert after != before
