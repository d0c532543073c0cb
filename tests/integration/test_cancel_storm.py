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
        assert outcomes["cancelled"] + outcomes["timeout"] > TASKS // 2, outcomes
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
