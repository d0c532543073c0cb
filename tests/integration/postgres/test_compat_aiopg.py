"""The aiopg drop-in layer (``poolkeeper.compat.aiopg``) against the real PostgreSQL.

The article's aiopg example runs as written with only the import changed; the
rest holds the layer to aiopg's pool API: ``minsize``/``maxsize``, ``size``
and ``freesize``, ``acquire``/``release``, ``pool.cursor()``,
``close()``/``wait_closed()`` and ``terminate()``.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import pytest

from poolkeeper.compat import aiopg as compat_aiopg
from tests.integration.postgres.conftest import backends
from tests.support.waiting import asettle

pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.anyio]


async def test_article_aiopg_example_runs_unchanged(
    dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from poolkeeper.compat import aiopg  # was: import aiopg

    async def main() -> None:
        # Database connection details
        database_url = dsn  # was: "postgresql://user:password@host:port/database"
        # Create a connection pool
        async with aiopg.create_pool(database_url) as pool:  # noqa: SIM117 - as written
            async with pool.acquire() as conn:
                async with conn.cursor() as cur:
                    await cur.execute("SELECT 1")
                    result = await cur.fetchone()
                    print(result)

    await main()  # was: asyncio.run(main()), the test runs inside a loop already
    assert capsys.readouterr().out == "(1,)\n"


async def test_sizes_acquire_release_and_backends(
    dsn: str, app_name: str, admin: Any
) -> None:
    pool = await compat_aiopg.create_pool(
        dsn, minsize=2, maxsize=3, application_name=app_name
    )
    try:
        assert (pool.minsize, pool.maxsize) == (2, 3)
        assert (pool.size, pool.freesize) == (2, 2)
        assert backends(admin, app_name) == 2
        conn = await pool.acquire()
        assert pool.freesize == 1
        async with pool.acquire() as second, second.cursor() as cur:
            await cur.execute("SELECT 2")
            assert await cur.fetchone() == (2,)
        await pool.release(conn)
        assert pool.freesize == pool.size
        assert pool.timeout == compat_aiopg.TIMEOUT
        with pytest.raises(ValueError, match="not acquired from this pool"):
            pool.release(conn)
    finally:
        pool.close()
        await pool.wait_closed()
    assert pool.closed
    assert await asettle(lambda: backends(admin, app_name) == 0)


async def test_pool_cursor_both_forms(dsn: str) -> None:
    async with compat_aiopg.create_pool(dsn, minsize=1, maxsize=1) as pool:
        async with pool.cursor() as cur:
            await cur.execute("SELECT 3")
            assert await cur.fetchone() == (3,)
        assert pool.freesize == 1
        with await pool.cursor() as cur:
            await cur.execute("SELECT 4")
            assert await cur.fetchone() == (4,)
        assert await asettle(lambda: pool.freesize == 1)


async def test_acquire_waits_then_times_out(dsn: str) -> None:
    async with compat_aiopg.create_pool(dsn, minsize=1, maxsize=1, timeout=0.3) as pool:
        held = await pool.acquire()
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(TimeoutError):
            await pool.acquire()
        assert 0.25 <= loop.time() - start < 2.0
        await pool.release(held)


async def test_transaction_left_open_is_rolled_back(dsn: str) -> None:
    async with compat_aiopg.create_pool(dsn, minsize=1, maxsize=1) as pool:
        async with pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute("BEGIN")
            await cur.execute("CREATE TEMP TABLE pk_aiopg_tx (x int)")
        async with pool.acquire() as conn, conn.cursor() as cur:
            assert conn.raw.get_transaction_status() == 0  # idle
            await cur.execute("SELECT to_regclass('pg_temp.pk_aiopg_tx') IS NULL")
            assert await cur.fetchone() == (True,)


async def test_close_waits_for_acquired_connections(
    dsn: str, app_name: str, admin: Any
) -> None:
    pool = await compat_aiopg.create_pool(
        dsn, minsize=1, maxsize=2, application_name=app_name
    )
    conn = await pool.acquire()
    with pytest.raises(RuntimeError, match=r"after \.close"):
        await pool.wait_closed()
    pool.close()
    with pytest.raises(RuntimeError, match="after closing pool"):
        await pool.acquire()
    waiter = asyncio.ensure_future(pool.wait_closed())
    await asyncio.sleep(0.1)
    assert not waiter.done()  # a connection is still out
    await pool.release(conn)
    await asyncio.wait_for(waiter, 5)
    assert pool.closed
    assert await asettle(lambda: backends(admin, app_name) == 0)


async def test_terminate_closes_acquired_connections(
    dsn: str, app_name: str, admin: Any
) -> None:
    pool = await compat_aiopg.create_pool(
        dsn, minsize=1, maxsize=2, application_name=app_name
    )
    conn = await pool.acquire()
    pool.terminate()
    assert conn.closed
    await asyncio.wait_for(pool.wait_closed(), 5)
    await pool.release(conn)  # released after terminate: a no-op, as in aiopg
    assert pool.closed
    assert await asettle(lambda: backends(admin, app_name) == 0)


async def test_connect_error_is_raised_from_create_pool(postgres_url: str) -> None:
    parts = urlsplit(postgres_url)
    bad = urlunsplit(("postgresql", parts.netloc, "/pk_no_such_db", "", ""))
    with pytest.raises(psycopg2.OperationalError, match="does not exist"):
        await compat_aiopg.create_pool(bad, minsize=1, timeout=2)


async def test_on_connect_and_bad_arguments(dsn: str) -> None:
    seen: list[Any] = []

    async def on_connect(conn: Any) -> None:
        seen.append(conn)

    async with compat_aiopg.create_pool(
        dsn, minsize=2, maxsize=2, on_connect=on_connect
    ) as pool:
        assert len(seen) == 2
        assert pool.echo is False
    with pytest.raises(ValueError, match="maxsize"):
        compat_aiopg.create_pool(dsn, minsize=3, maxsize=2)
    with pytest.raises(ValueError, match="pool_options cannot set"):
        compat_aiopg.create_pool(dsn, pool_options={"timeout": 1})
