"""Scenario S4b: a frozen backend (SIGSTOP, TCP still ACKing) and ``query_timeout``.

Keepalives and ``tcp_user_timeout`` never fire against a process that is
stopped while its kernel keeps answering, so a query sent to it hangs for as
long as the freeze lasts. With ``query_timeout`` the pool's housekeeper shuts
the connection's socket down: the caller gets ``QueryTimeout`` (chained to
the driver's connection error) within ``query_timeout`` + 0.5 s, the
connection is discarded, and the pool refills.

Only backends of the throwaway cluster are ever frozen (``PgCluster.frozen``,
which always sends SIGCONT), never the machine's shared server.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import psycopg
import psycopg2
import pytest

import poolkeeper
from poolkeeper import PoolEvent
from tests.support.pgcluster import PgCluster
from tests.support.waiting import asettle, settle, unique_app

pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.slow]

QT = 1.0  # query_timeout of the scenarios
LATE = 0.5  # how late QueryTimeout may come (RELIABILITY_PLAN S4b: <= 1.5 s)


def app() -> str:
    return unique_app("pk-qt")


def run(conn: Any, sql: str) -> Any:
    """Run ``sql`` on a psycopg 3 or psycopg2 connection; return the first value."""
    if isinstance(conn, psycopg.Connection):
        row = conn.execute(sql).fetchone()
    else:
        with conn.cursor() as cursor:
            cursor.execute(sql)
            row = cursor.fetchone()
    return row[0] if row else None


SYNC_DRIVERS = [
    pytest.param("psycopg", psycopg.OperationalError, id="psycopg"),
    pytest.param("psycopg2", psycopg2.OperationalError, id="psycopg2"),
]


def sync_url(cluster: PgCluster, driver: str, name: str) -> str:
    return cluster.url(application_name=name).replace(
        "postgresql://", f"postgresql+{driver}://"
    )


@pytest.mark.parametrize(("driver", "error"), SYNC_DRIVERS)
def test_frozen_backend_raises_query_timeout(
    pg_cluster: PgCluster, driver: str, error: type[Exception]
) -> None:
    name = app()
    discards: list[PoolEvent] = []
    with poolkeeper.Pool(
        sync_url(pg_cluster, driver, name),
        min_size=2,
        max_size=2,
        timeout=5.0,
        query_timeout=QT,
    ) as pool:
        pool.open(wait=True)
        pool.on("discard", discards.append)
        started = 0.0
        with (  # noqa: PT012
            pytest.raises(poolkeeper.QueryTimeout) as raised,
            pool.connection() as conn,
        ):
            pid = run(conn, "SELECT pg_backend_pid()")
            # Any phase of the housekeeper's 0.25 s tick.
            time.sleep(random.uniform(0, 0.25))
            with pg_cluster.frozen(pid):
                started = time.monotonic()
                run(conn, "SELECT 1")
        late = time.monotonic() - started - QT
        print(f"\n{driver}: QueryTimeout {late:+.3f} s after query_timeout={QT}")
        assert -0.05 <= late <= LATE, late
        assert isinstance(raised.value.__cause__, error)
        assert raised.value.timeout == QT and raised.value.pool_name == pool.name

        # The discard makes the pool ping its idle connection in the
        # background (a sibling may be dead too): lent out for a moment.
        assert settle(lambda: pool.stats().in_use == 0, within=1.0), pool.stats()
        stats = pool.stats()
        assert stats.in_use == 0 and stats.waiting == 0
        assert stats.size == stats.idle
        assert stats.query_timeouts == 1
        assert stats.closed_by_reason["query_timeout"] == 1
        assert [e.reason for e in discards] == ["query_timeout"]
        # Never reused: the frozen backend's session is gone once it runs again.
        assert settle(lambda: pid not in pg_cluster.backend_pids(name))
        assert settle(lambda: pool.stats().size == 2 == pg_cluster.backends(name))
        for _ in range(4):
            with pool.connection() as conn:
                assert run(conn, "SELECT 1") == 1
                assert run(conn, "SELECT pg_backend_pid()") != pid
        stats = pool.stats()
        assert stats.in_use == 0 and stats.waiting == 0 and stats.query_timeouts == 1


def test_asyncpg_frozen_backend_raises_query_timeout(pg_cluster: PgCluster) -> None:
    import asyncpg

    name = app()
    url = pg_cluster.url().replace("postgresql://", "postgresql+asyncpg://")
    args = {"server_settings": {"application_name": name}}
    discards: list[PoolEvent] = []

    async def main() -> None:
        async with poolkeeper.AsyncPool(
            url,
            min_size=2,
            max_size=2,
            timeout=5.0,
            connect_args=args,
            query_timeout=QT,
        ) as pool:
            await pool.open(wait=True)
            pool.on("discard", discards.append)
            started = 0.0
            with pytest.raises(poolkeeper.QueryTimeout) as raised:  # noqa: PT012
                async with pool.connection() as conn:
                    pid = await conn.fetchval("SELECT pg_backend_pid()")
                    await asyncio.sleep(random.uniform(0, 0.25))
                    with pg_cluster.frozen(pid):
                        started = time.monotonic()
                        await conn.fetchval("SELECT 1")
            late = time.monotonic() - started - QT
            print(f"\nasyncpg: QueryTimeout {late:+.3f} s after query_timeout={QT}")
            assert -0.05 <= late <= LATE, late
            assert isinstance(raised.value.__cause__, asyncpg.PostgresConnectionError)

            # The discard makes the pool ping its idle connection in the
            # background (a sibling may be dead too): lent out for a moment.
            assert await asettle(lambda: pool.stats().in_use == 0), pool.stats()
            stats = pool.stats()
            assert stats.in_use == 0 and stats.waiting == 0
            assert stats.size == stats.idle
            assert stats.query_timeouts == 1
            assert stats.closed_by_reason["query_timeout"] == 1
            assert [e.reason for e in discards] == ["query_timeout"]

            def refilled() -> bool:
                return pid not in pg_cluster.backend_pids(
                    name
                ) and pool.stats().size == 2 == pg_cluster.backends(name)

            assert await asyncio.to_thread(settle, refilled)
            for _ in range(4):
                async with pool.connection() as conn:
                    assert await conn.fetchval("SELECT 1") == 1
                    assert await conn.fetchval("SELECT pg_backend_pid()") != pid
            stats = pool.stats()
            assert stats.in_use == 0 and stats.waiting == 0

    asyncio.run(main())


@pytest.mark.parametrize(("driver", "error"), SYNC_DRIVERS)
def test_legitimate_queries_are_untouched(
    pg_cluster: PgCluster, driver: str, error: type[Exception]
) -> None:
    """A query shorter than query_timeout, back-to-back short queries for
    longer than it, and a connection held idle longer than it all survive
    (psycopg and psycopg2 know when a command is in progress)."""
    name = app()
    with poolkeeper.Pool(
        sync_url(pg_cluster, driver, name), min_size=1, max_size=1, query_timeout=QT
    ) as pool:
        with pool.connection() as conn:
            run(conn, f"SELECT pg_sleep({QT * 0.7})")
            pid = run(conn, "SELECT pg_backend_pid()")
            deadline = time.monotonic() + 2.5 * QT
            queries = 0
            while time.monotonic() < deadline:
                run(conn, "SELECT 1")
                queries += 1
            time.sleep(QT + 0.8)  # held, no command running
            assert run(conn, "SELECT pg_backend_pid()") == pid
        stats = pool.stats()
        assert stats.query_timeouts == 0, queries
        assert stats.closed_by_reason["query_timeout"] == 0
        assert stats.size == 1 and stats.in_use == 0
        with pool.connection() as conn:
            assert run(conn, "SELECT pg_backend_pid()") == pid


def test_asyncpg_legitimate_query_is_untouched_but_idle_hold_is_bounded(
    pg_cluster: PgCluster,
) -> None:
    """asyncpg cannot say whether a command is in progress: a short query and
    steady traffic survive, a connection held without traffic past
    query_timeout is aborted (documented)."""
    name = app()
    url = pg_cluster.url().replace("postgresql://", "postgresql+asyncpg://")
    args = {"server_settings": {"application_name": name}}

    async def main() -> None:
        async with poolkeeper.AsyncPool(
            url, min_size=1, max_size=1, connect_args=args, query_timeout=QT
        ) as pool:
            async with pool.connection() as conn:
                await conn.execute(f"SELECT pg_sleep({QT * 0.7})")
                deadline = time.monotonic() + 2.5 * QT
                while time.monotonic() < deadline:
                    await conn.fetchval("SELECT 1")
                    await asyncio.sleep(0.01)
            assert pool.stats().query_timeouts == 0
            with pytest.raises(poolkeeper.QueryTimeout):  # noqa: PT012
                async with pool.connection() as conn:
                    await asyncio.sleep(QT + 0.6)
                    await conn.fetchval("SELECT 1")
            stats = pool.stats()
            assert stats.query_timeouts == 1 and stats.in_use == 0
            async with pool.connection(timeout=5) as conn:
                assert await conn.fetchval("SELECT 1") == 1

    asyncio.run(main())
