"""A storm of cancelled tasks costs no reconnects where the driver can recover.

300 tasks on an AsyncPool of 4, half under ``wait_for`` with a 0-6 ms limit,
half ``cancel()``-ed after 0-6 ms (``tests/support/storm.py``; the 10,000-task
figures are in docs/RELIABILITY.md, from ``benchmarks/cancel_storm.py``).
psycopg 3 cancels an interrupted command on the server itself and asyncpg
recovers on its own, so the pool keeps every connection: no more than
``max_size`` are ever opened. aiopg and aiomysql close a connection whose
command was interrupted; the pool counts each such close as ``"cancelled"``
(never ``"broken"`` or ``"check"``, which would make the other connections
suspect and ping them, and so cascade).
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

import poolkeeper
from tests.conftest import import_driver
from tests.support.storm import QUERIES, cancel_storm

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

MAX_SIZE = 4
TASKS = 300

DRIVERS = [
    pytest.param("psycopg", "postgres", True, marks=pytest.mark.postgres),
    pytest.param("asyncpg", "postgres", True, marks=pytest.mark.postgres),
    pytest.param("aiopg", "postgres", False, marks=pytest.mark.postgres),
    pytest.param("aiomysql", "mysql", False, marks=pytest.mark.mysql),
]


async def _in_transaction(conn: Any) -> None:
    # asyncpg runs in autocommit: open a transaction for the pool to end.
    await conn.execute("BEGIN; SELECT pg_sleep(0.001)")


@pytest.mark.timeout(60)
@pytest.mark.postgres
@pytest.mark.parametrize("built_from", ["url", "callable"])
async def test_asyncpg_cancelled_in_the_pools_commit_keeps_its_connection(
    request: pytest.FixtureRequest, postgres_url: str, built_from: str
) -> None:
    """Each task leaves a transaction open, so the pool commits on the way
    out and cancellations land in that commit too. asyncpg cancels the
    interrupted command itself, in the background; the pool waits for it
    (``wait_settled``), rolls back and keeps the connection. It used to
    close it (about 1 in 20 tasks, reason ``"cancelled"``)."""
    import_driver(request.config, "asyncpg")
    import asyncpg

    url = postgres_url.replace("://", "+asyncpg://", 1)

    async def connect() -> Any:
        return await asyncpg.connect(postgres_url)

    pool: poolkeeper.AsyncPool[Any] = poolkeeper.AsyncPool(
        url if built_from == "url" else connect,
        min_size=0,
        max_size=MAX_SIZE,
        timeout=1,
    )
    async with pool:
        outcomes = await cancel_storm(
            lambda: pool.connection(timeout=1),
            _in_transaction,
            TASKS * 2,
            random.Random(7),
        )
        assert outcomes["cancelled"] + outcomes["timeout"] > 2 * TASKS // 3, outcomes
        for _ in range(300):
            stats = pool.stats()
            if stats.in_use == 0 and stats.connecting == 0:
                break
            await asyncio.sleep(0.01)
        async with pool.connection(timeout=2) as conn:
            assert await conn.fetchval("SELECT 1") == 1
        stats = pool.stats()
    reasons = {k: v for k, v in stats.closed_by_reason.items() if v}
    assert stats.connections_created <= MAX_SIZE, (stats.connections_created, reasons)
    assert set(reasons) <= {"close"}, reasons


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("driver", "server", "recovers"), DRIVERS)
async def test_a_cancellation_storm_reconnects_only_where_it_must(
    request: pytest.FixtureRequest, driver: str, server: str, recovers: bool
) -> None:
    import_driver(request.config, driver)
    base = request.getfixturevalue(f"{server}_url")
    url = base.replace("://", f"+{driver}://", 1)
    pool: poolkeeper.AsyncPool[Any] = poolkeeper.AsyncPool(
        url, min_size=0, max_size=MAX_SIZE, timeout=1
    )
    async with pool:
        outcomes = await cancel_storm(
            lambda: pool.connection(timeout=1), QUERIES[driver], TASKS, random.Random(7)
        )
        assert outcomes["error"] == 0, outcomes
        # A real storm: a good share of the tasks were interrupted (how many
        # finish first depends on the machine's load).
        assert outcomes["cancelled"] + outcomes["timeout"] > TASKS // 3, outcomes
        # Connections given up by cancelled tasks are recovered (or closed)
        # in the background: wait until the pool holds none of them.
        for _ in range(200):
            stats = pool.stats()
            if stats.in_use == 0 and stats.connecting == 0:
                break
            await asyncio.sleep(0.01)
        async with pool.connection(timeout=2) as conn:
            await QUERIES[driver](conn)
        stats = pool.stats()
    assert stats.in_use == 0, stats
    reasons = {k: v for k, v in stats.closed_by_reason.items() if v}
    if recovers:
        assert stats.connections_created <= MAX_SIZE, (
            stats.connections_created,
            reasons,
        )
        assert set(reasons) <= {"close"}, reasons
    else:
        # Every close before the pool's own is a cancelled command's.
        assert set(reasons) <= {"cancelled", "close"}, reasons
        assert stats.connections_created <= MAX_SIZE + reasons.get("cancelled", 0)
