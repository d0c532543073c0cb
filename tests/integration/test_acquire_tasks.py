"""``AsyncPool.acquire()`` wherever a coroutine works, on real asyncio drivers.

``asyncio.create_task``, ``wait_for``, ``gather``, ``shield`` and anyio task
groups take ``pool.acquire()`` as they take any coroutine. A task wrapping it
that is cancelled leaks nothing, wherever the cancellation lands: while the
caller is queued, while a connect for it is in flight, during its validation
ping, right after a connection was handed to it, or at random under
``wait_for`` with a 0-3 ms limit. After each, no connection is in use, no
waiter is left, and the server sees exactly the sessions the pool counts.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

import poolkeeper
from tests.conftest import import_driver
from tests.integration.test_pool_drivers import (
    _MARKS,
    CASES,
    Target,
    _mysql_target,
    _postgres_target,
)
from tests.support.waiting import asettle

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

ASYNC_CASES = [
    c for c in CASES if c.is_async and c.server != "sqlite" and not c.generic
]


@pytest.fixture(
    params=[pytest.param(c, id=c.id, marks=_MARKS[c.server]) for c in ASYNC_CASES]
)
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    case = request.param
    import_driver(request.config, case.package)
    tag = f"pk_acq_{uuid.uuid4().hex[:10]}"
    if case.server == "postgres":
        yield from _postgres_target(case, request.getfixturevalue("postgres_url"), tag)
    else:
        yield from _mysql_target(case, request.getfixturevalue("mysql_url"), tag)


async def _settled(target: Target, pool: poolkeeper.AsyncPool[Any]) -> None:
    def check() -> bool:
        stats = pool.stats()
        return (
            stats.in_use == 0
            and stats.waiting == 0
            and stats.connecting == 0
            and target.sessions() == stats.size
        )

    assert await asettle(check, within=5.0), (pool.stats(), target.sessions())


async def _until(predicate: Any) -> None:
    for _ in range(5000):
        if predicate():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition not reached")


async def test_acquire_in_tasks_gather_shield_wait_for_and_anyio(
    target: Target,
) -> None:
    async with poolkeeper.AsyncPool(target.url, min_size=0, max_size=4) as pool:
        conns = [await asyncio.create_task(pool.acquire(timeout=2))]
        conns.append(await asyncio.wait_for(pool.acquire(), 5))
        conns.extend(await asyncio.gather(pool.acquire(), pool.acquire()))
        for conn in conns:
            await pool.release(conn)
        await pool.release(await asyncio.shield(pool.acquire()))
        got: list[Any] = []

        async def borrow() -> None:
            got.append(await pool.acquire(timeout=5))

        async with anyio.create_task_group() as tg:
            tg.start_soon(borrow)
            tg.start_soon(borrow)
        for conn in got:
            await pool.release(conn)
        async with pool.acquire() as conn:
            assert pool.stats().in_use == 1
        assert pool.stats().acquires == 8
        await _settled(target, pool)


async def test_cancelled_acquire_tasks_leak_nothing(target: Target) -> None:
    async with poolkeeper.AsyncPool(
        target.url, min_size=0, max_size=2, validate="always"
    ) as pool:
        # 1. Cancelled while a connect for it is in flight (empty pool).
        task = asyncio.create_task(pool.acquire(timeout=5))
        await asyncio.sleep(0)  # it queues and starts a connect, then waits
        assert pool.stats().connecting == 1 and pool.stats().waiting == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await _settled(target, pool)

        # 2. Cancelled during its validation ping (validate="always").
        await _until(lambda: pool.stats().idle >= 1)
        task = asyncio.create_task(pool.acquire(timeout=5))
        await asyncio.sleep(0)  # the task starts and sends the ping
        await asyncio.sleep(0)
        task.cancel()
        results = await asyncio.gather(task, return_exceptions=True)
        if not isinstance(results[0], BaseException):
            await pool.release(results[0])  # the ping had already answered
        await _settled(target, pool)

        # 3. Cancelled while queued, and 4. right after a hand-off.
        held = [await pool.acquire(), await pool.acquire()]
        queued = asyncio.create_task(pool.acquire(timeout=5))
        handed = asyncio.create_task(pool.acquire(timeout=5))
        last = asyncio.create_task(pool.acquire(timeout=5))
        await _until(lambda: pool.stats().waiting == 3)
        queued.cancel()
        await pool.release(held[0])  # goes to `handed`, cancelled before it runs
        handed.cancel()
        for task in (queued, handed):
            with pytest.raises(asyncio.CancelledError):
                await task
        conn = await asyncio.wait_for(last, 5)
        for c in (conn, held[1]):
            await pool.release(c)
        await _settled(target, pool)


async def test_wait_for_storm_on_acquire_leaks_nothing(target: Target) -> None:
    rng = random.Random(1234)
    async with poolkeeper.AsyncPool(target.url, min_size=0, max_size=3) as pool:

        async def one() -> None:
            try:
                conn = await asyncio.wait_for(
                    pool.acquire(timeout=5), rng.uniform(0, 0.003)
                )
            except (asyncio.TimeoutError, poolkeeper.PoolTimeout):
                return
            await pool.release(conn)

        for _ in range(20):
            await asyncio.gather(*(one() for _ in range(10)))
        await _settled(target, pool)
