"""AsyncPool behaviour that has no thread twin: cancellation, loops, acquire() forms."""

from __future__ import annotations

import asyncio
import random

import pytest

from poolkeeper import AsyncPool, PoolError
from tests.unit._async.test_pool import Factory, FakeConnection, open_count

pytestmark = pytest.mark.anyio


async def test_acquire_is_awaitable_and_a_context_manager() -> None:
    async with AsyncPool(Factory()) as pool:
        conn = await pool.acquire()
        await pool.release(conn)
        async with pool.acquire() as conn2:
            assert conn2 is conn and pool.stats().in_use == 1
        assert pool.stats().in_use == 0 and conn.rollbacks == 2


async def test_cancelled_waiter_gets_nothing_and_leaks_nothing() -> None:
    factory = Factory()
    async with AsyncPool(factory, min_size=1, max_size=1) as pool:
        held = await pool.acquire()
        task = asyncio.ensure_future(pool.acquire(timeout=10))
        while pool.stats().waiting < 1:
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert pool.stats().waiting == 0
        await pool.release(held)
        assert pool.stats().idle == 1 and pool.stats().in_use == 0


async def test_connection_handed_to_a_cancelled_waiter_comes_back() -> None:
    async with AsyncPool(Factory(), min_size=1, max_size=1) as pool:
        held = await pool.acquire()
        first = asyncio.ensure_future(pool.acquire(timeout=10))
        second = asyncio.ensure_future(pool.acquire(timeout=10))
        while pool.stats().waiting < 2:
            await asyncio.sleep(0)
        # Hand the connection to `first`, then cancel it before it runs.
        await pool.release(held)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        conn = await asyncio.wait_for(second, 5)
        assert conn is held
        await pool.release(conn)
        assert pool.stats().in_use == 0 and pool.stats().waiting == 0


async def test_random_cancellations_keep_the_pool_consistent() -> None:
    rng = random.Random(7)
    factory = Factory(delay=0.001)
    async with AsyncPool(factory, min_size=0, max_size=3) as pool:

        async def user() -> None:
            async with pool.connection():
                await asyncio.sleep(rng.uniform(0, 0.002))

        for _ in range(30):
            tasks = [asyncio.create_task(user()) for _ in range(20)]
            await asyncio.sleep(rng.uniform(0, 0.004))
            for task in rng.sample(tasks, 10):
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            assert all(
                r is None or isinstance(r, asyncio.CancelledError) for r in results
            )
        for _ in range(100):  # let in-flight connects land
            if pool.stats().connecting == 0:
                break
            await asyncio.sleep(0.01)
        stats = pool.stats()
        assert stats.in_use == 0 and stats.waiting == 0
        assert stats.size == open_count(factory) <= 3


async def test_wait_for_with_tiny_timeouts_never_leaks() -> None:
    async with AsyncPool(Factory(), min_size=1, max_size=1) as pool:
        held = await pool.acquire()
        for _ in range(50):
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(pool.acquire(timeout=10), 0.0005)
        assert pool.stats().waiting == 0
        await pool.release(held)
        assert pool.stats().idle == 1


async def test_cancelled_during_reset_discards_the_connection() -> None:
    gate = asyncio.Event()

    async def slow_reset(conn: FakeConnection) -> None:
        gate.set()
        await asyncio.sleep(10)

    factory = Factory()
    async with AsyncPool(factory, min_size=0, max_size=1, reset=slow_reset) as pool:
        conn = await pool.acquire()
        task = asyncio.create_task(pool.release(conn))
        await gate.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert conn.closed and pool.stats().size == 0
        assert pool.stats().closed_by_reason["broken"] == 1


def test_using_a_pool_from_another_loop_is_a_clear_error() -> None:
    pool = AsyncPool(Factory(), min_size=0)

    async def first() -> None:
        await pool.open()
        async with pool.connection():
            pass

    async def second() -> None:
        with pytest.raises(PoolError, match="another event loop"):
            await pool.acquire()

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(first())
        asyncio.run(second())
        loop.run_until_complete(pool.close())
    finally:
        loop.close()
