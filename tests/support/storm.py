"""A storm of cancelled tasks on a pool (benchmarks/cancel_storm.py and its test)."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from typing import Any

#: Tasks in flight at once: a few more than the pools under test have connections.
CONCURRENCY = 8


async def cancel_storm(
    use: Callable[[], contextlib.AbstractAsyncContextManager[Any]],
    query: Callable[[Any], Awaitable[Any]],
    n: int,
    rng: random.Random,
    concurrency: int = CONCURRENCY,
) -> dict[str, int]:
    """Run ``n`` tasks that each borrow a connection (``use()``) and run ``query``.

    Half run under ``asyncio.wait_for`` with a random 0-6 ms limit, half are
    ``cancel()``-ed after a random 0-6 ms, ``concurrency`` at a time, so
    cancellations land in the wait for a connection, in the query and on the
    way out. Returns how many tasks finished ("ok"), were cancelled, timed
    out (``wait_for``) or failed otherwise ("error").
    """

    async def one() -> None:
        async with use() as conn:
            await query(conn)

    outcomes = {"ok": 0, "cancelled": 0, "timeout": 0, "error": 0}

    async def guarded(limit: float) -> None:
        try:
            await asyncio.wait_for(one(), limit)
        except TimeoutError:
            outcomes["timeout"] += 1

    async def lane(lane_no: int) -> None:
        # Each lane runs its share of the tasks one after another, so that
        # cancellations land in the query and on the way out, not only in
        # the queue for a connection.
        for i in range(lane_no, n, concurrency):
            delay = rng.uniform(0, 0.006)
            if i % 2:
                task = asyncio.ensure_future(guarded(delay))
            else:
                task = asyncio.ensure_future(one())
                asyncio.get_running_loop().call_later(delay, task.cancel)
            try:
                await task
            except asyncio.CancelledError:
                outcomes["cancelled"] += 1
            except Exception:
                outcomes["error"] += 1

    await asyncio.gather(*(lane(k) for k in range(concurrency)))
    # A cancel() that came after its task finished: the task succeeded.
    outcomes["ok"] = n - outcomes["timeout"] - outcomes["cancelled"] - outcomes["error"]
    return outcomes


async def _execute(conn: Any, sql: str) -> None:
    await conn.execute(sql)


async def _cursor_execute(conn: Any, sql: str) -> None:
    async with conn.cursor() as cur:
        await cur.execute(sql)
        await cur.fetchall()


#: Driver name -> one short server-side sleep (1 ms) on a connection of it.
QUERIES: dict[str, Callable[[Any], Awaitable[Any]]] = {
    "psycopg": lambda conn: _execute(conn, "SELECT pg_sleep(0.001)"),
    "asyncpg": lambda conn: _execute(conn, "SELECT pg_sleep(0.001)"),
    "aiopg": lambda conn: _cursor_execute(conn, "SELECT pg_sleep(0.001)"),
    "aiomysql": lambda conn: _cursor_execute(conn, "SELECT SLEEP(0.001)"),
    "aiosqlite": lambda conn: _execute(conn, "SELECT 1"),
}
