"""poolkeeper through a real PgBouncer in transaction mode (``default_pool_size = 2``).

Twenty clients share two server connections, so consecutive statements of
one client land on different server sessions. Without the preset, the
drivers' named prepared statements break (psycopg after its prepare threshold
of 5, asyncpg at once); with :func:`poolkeeper.presets.pgbouncer_transaction`
there are no errors (RELIABILITY_PLAN S11: 0 errors in 20 x 500 queries).
"""

from __future__ import annotations

import asyncio
import collections
import threading
from typing import Any

import pytest

import poolkeeper
from poolkeeper import presets
from tests.support.pgbouncer import PgBouncer

CLIENTS = 20
PREPARED_STATEMENT_ERRORS = {
    # psycopg / asyncpg names for SQLSTATE 26000 and 42P05.
    "InvalidSqlStatementName",
    "DuplicatePreparedStatement",
    "InvalidSQLStatementNameError",
    "DuplicatePreparedStatementError",
}


def _url(bouncer: PgBouncer, driver: str) -> str:
    return bouncer.url.replace("postgresql://", f"postgresql+{driver}://")


def run_psycopg(url: str, per_client: int, **options: Any) -> collections.Counter[str]:
    """Run CLIENTS threads x per_client parameterized queries; count outcomes."""
    outcomes: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()
    with poolkeeper.Pool(url, min_size=CLIENTS, max_size=CLIENTS, **options) as pool:

        def work() -> None:
            for i in range(per_client):
                try:
                    with pool.connection() as conn:
                        row = conn.execute("SELECT %s::int + 1", (i,)).fetchone()
                    outcome = "ok" if row == (i + 1,) else "wrong result"
                except Exception as exc:
                    outcome = type(exc).__name__
                with lock:
                    outcomes[outcome] += 1

        threads = [threading.Thread(target=work) for _ in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return outcomes


async def run_asyncpg(
    url: str, per_client: int, **options: Any
) -> collections.Counter[str]:
    """Run CLIENTS tasks x per_client parameterized queries; count outcomes."""
    outcomes: collections.Counter[str] = collections.Counter()
    async with poolkeeper.AsyncPool(
        url, min_size=CLIENTS, max_size=CLIENTS, **options
    ) as pool:

        async def work() -> None:
            for i in range(per_client):
                try:
                    async with pool.connection() as conn:
                        value = await conn.fetchval("SELECT $1::int + 1", i)
                    outcome = "ok" if value == i + 1 else "wrong result"
                except Exception as exc:
                    outcome = type(exc).__name__
                outcomes[outcome] += 1

        await asyncio.gather(*(work() for _ in range(CLIENTS)))
    return outcomes


def _failures(outcomes: collections.Counter[str]) -> int:
    return sum(n for k, n in outcomes.items() if k != "ok")


def test_psycopg_defaults_break_on_prepared_statements(pgbouncer: PgBouncer) -> None:
    outcomes = run_psycopg(_url(pgbouncer, "psycopg"), 60)
    print("psycopg defaults through PgBouncer:", dict(outcomes))
    assert _failures(outcomes) > 0
    assert set(outcomes) - {"ok"} <= PREPARED_STATEMENT_ERRORS


def test_psycopg_preset_10000_queries_no_errors(pgbouncer: PgBouncer) -> None:
    options = presets.pgbouncer_transaction("psycopg")
    outcomes = run_psycopg(_url(pgbouncer, "psycopg"), 500, **options)
    print("psycopg preset through PgBouncer:", dict(outcomes))
    assert outcomes == {"ok": CLIENTS * 500}


@pytest.mark.anyio
async def test_asyncpg_defaults_break_on_prepared_statements(
    pgbouncer: PgBouncer,
) -> None:
    outcomes = await run_asyncpg(_url(pgbouncer, "asyncpg"), 60)
    print("asyncpg defaults through PgBouncer:", dict(outcomes))
    assert _failures(outcomes) > 0
    assert set(outcomes) - {"ok"} <= PREPARED_STATEMENT_ERRORS


@pytest.mark.anyio
async def test_asyncpg_preset_10000_queries_no_errors(pgbouncer: PgBouncer) -> None:
    url = _url(pgbouncer, "asyncpg")
    outcomes = await run_asyncpg(url, 500, **presets.pgbouncer_transaction(url))
    print("asyncpg preset through PgBouncer:", dict(outcomes))
    assert outcomes == {"ok": CLIENTS * 500}


def test_transactions_keep_their_server_connection(pgbouncer: PgBouncer) -> None:
    # Inside one transaction PgBouncer pins the server connection, so
    # transaction-scoped state (SET LOCAL, temp tables ON COMMIT DROP) works.
    options = presets.pgbouncer_transaction("psycopg")
    with poolkeeper.Pool(_url(pgbouncer, "psycopg"), max_size=4, **options) as pool:
        with pool.connection() as conn:
            conn.execute("SET LOCAL statement_timeout = '1234ms'")
            conn.execute("CREATE TEMP TABLE pk_t (x int) ON COMMIT DROP")
            conn.execute("INSERT INTO pk_t VALUES (1)")
            row = conn.execute("SELECT current_setting('statement_timeout')").fetchone()
            assert row == ("1234ms",)
        with pool.connection() as conn:
            row = conn.execute("SELECT current_setting('statement_timeout')").fetchone()
            assert row != ("1234ms",)


def test_kill_and_resume_then_check_replaces_dead_connections(
    pgbouncer: PgBouncer,
) -> None:
    options = presets.pgbouncer_transaction("psycopg")
    with poolkeeper.Pool(
        _url(pgbouncer, "psycopg"), min_size=4, max_size=4, **options
    ) as pool:
        pool.open(wait=True)
        pgbouncer.admin(f"KILL {pgbouncer.database}")  # drops every client
        pgbouncer.admin(f"RESUME {pgbouncer.database}")
        pool.check()  # pings the idle connections, replaces the dead ones
        for i in range(100):
            with pool.connection(timeout=5) as conn:
                assert conn.execute("SELECT %s::int", (i,)).fetchone() == (i,)
        assert pool.stats().connections_closed >= 4


@pytest.mark.anyio
async def test_reconnect_is_invisible_to_callers(pgbouncer: PgBouncer) -> None:
    url = _url(pgbouncer, "asyncpg")
    options = presets.pgbouncer_transaction(url)
    async with poolkeeper.AsyncPool(url, min_size=4, max_size=4, **options) as pool:
        await pool.open(wait=True)
        await asyncio.to_thread(pgbouncer.admin, "RECONNECT")
        for i in range(100):
            async with pool.connection(timeout=1) as conn:
                assert await conn.fetchval("SELECT $1::int", i) == i
