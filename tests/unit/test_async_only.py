"""AsyncPool behaviour that has no thread twin: cancellation, loops, acquire() forms."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any, Literal

import pytest

from poolkeeper import AsyncPool, PoolError, PoolTimeout
from tests.unit._async.test_pool import Factory, FakeConnection, FakeCursor, open_count

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


async def test_waiters_cancelled_in_the_middle_keep_the_queue_in_order() -> None:
    # Cancelled waiters leave the middle of the queue (in O(1), left behind
    # and skipped): the count drops at once and hand-off order is kept.
    async with AsyncPool(Factory(), min_size=1, max_size=1, timeout=10) as pool:
        held = await pool.acquire()
        order: list[int] = []

        async def waiter(i: int) -> None:
            async with pool.connection():
                order.append(i)
                await asyncio.sleep(0)

        tasks = []
        for i in range(200):
            tasks.append(asyncio.ensure_future(waiter(i)))
            await asyncio.sleep(0)
        while pool.stats().waiting < 200:
            await asyncio.sleep(0)
        cancelled = {i for i in range(200) if i % 3 != 0 and i != 199}
        for i in sorted(cancelled):
            tasks[i].cancel()
        await asyncio.sleep(0)
        assert pool.stats().waiting == 200 - len(cancelled)
        assert len(pool._state.waiters) < 200  # compacted along the way
        # A late, short waiter times out in the middle of the queue.
        with pytest.raises(TimeoutError):
            await pool.acquire(timeout=0.05)
        await pool.release(held)
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)
        assert order == [i for i in range(200) if i not in cancelled]
        stats = pool.stats()
        assert (stats.waiting, stats.in_use, stats.idle) == (0, 0, 1)
        assert len(pool._state.waiters) == 0 and pool._state.abandoned == 0


@pytest.mark.parametrize("fair", [True, False, "bounded"])
async def test_connection_handed_to_a_cancelled_waiter_comes_back(
    fair: bool | Literal["bounded"],
) -> None:
    # Fair: handed over, then recalled; otherwise the cancelled waiter was
    # only nudged and passes the nudge on to the next one.
    async with AsyncPool(Factory(), min_size=1, max_size=1, fair=fair) as pool:
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


async def test_bounded_a_running_caller_overtakes_a_woken_waiter_once() -> None:
    async with AsyncPool(
        Factory(), min_size=1, max_size=1, fair="bounded", timeout=10
    ) as pool:
        held = await pool.acquire()
        waiter = asyncio.ensure_future(pool.acquire())
        while pool.stats().waiting < 1:
            await asyncio.sleep(0)
        # The return only wakes the waiter; this task runs on and takes the
        # connection first (fair=True would have reserved it for the waiter).
        await pool.release(held)
        again = await pool.acquire(timeout=0)
        assert again is held
        for _ in range(5):  # the waiter wakes, finds nothing, queues again
            await asyncio.sleep(0)
        assert not waiter.done() and pool.stats().waiting == 1
        # Overtaken once: the next return is handed to it directly.
        await pool.release(again)
        with pytest.raises(PoolTimeout):
            await pool.acquire(timeout=0)
        conn = await asyncio.wait_for(waiter, 5)
        assert conn is held
        await pool.release(conn)
        stats = pool.stats()
        assert stats.acquires == 3 and stats.in_use == 0 and stats.waiting == 0


async def test_a_hand_off_to_a_cancelled_waiter_is_not_a_use() -> None:
    async with AsyncPool(Factory(), min_size=1, max_size=1, max_uses=2) as pool:
        held = await pool.acquire()
        waiter = asyncio.ensure_future(pool.acquire(timeout=10))
        while pool.stats().waiting < 1:
            await asyncio.sleep(0)
        await pool.release(held)  # handed to `waiter`...
        waiter.cancel()  # ...which is cancelled before it runs
        with pytest.raises(asyncio.CancelledError):
            await waiter
        stats = pool.stats()
        assert stats.acquires == 1 and stats.idle == 1
        assert stats.closed_by_reason["uses"] == 0
        async with pool.connection() as conn:
            assert conn is held  # its second use, not a new connection
        stats = pool.stats()
        assert stats.acquires == 2 and stats.closed_by_reason["uses"] == 1
        assert held.closed


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
        checkins: list[object] = []
        pool.on("checkin", checkins.append)
        conn = await pool.acquire()
        task = asyncio.create_task(pool.release(conn))
        await gate.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The fake driver cannot tell that no command is in progress: the
        # connection is closed in the background, as cancelled, not broken.
        for _ in range(50):
            if conn.closed:
                break
            await asyncio.sleep(0)
        assert conn.closed and pool.stats().size == 0
        assert pool.stats().closed_by_reason["cancelled"] == 1
        assert pool.stats().closed_by_reason["broken"] == 0
        assert len(checkins) == 1
        # Given back by the pool: the caller cannot release it a second time.
        with pytest.raises(PoolError, match="not checked out"):
            await pool.release(conn)


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


class YieldingConnection(FakeConnection):
    """A fake connection whose every operation suspends once, like real I/O."""

    async def commit(self) -> None:
        await asyncio.sleep(0)
        await super().commit()

    async def rollback(self) -> None:
        await asyncio.sleep(0)
        await super().rollback()

    async def cursor(self) -> FakeCursor:
        await asyncio.sleep(0)
        return await super().cursor()


class YieldingFactory(Factory):
    """Connects suspend a few times before the connection exists."""

    async def __call__(self) -> FakeConnection:
        for _ in range(3):
            await asyncio.sleep(0)
        conn = YieldingConnection(len(self.made) + 1)
        self.made.append(conn)
        return conn


async def _reset(conn: FakeConnection) -> None:
    await asyncio.sleep(0)


async def _release_later(pool: AsyncPool[FakeConnection], conn: FakeConnection) -> None:
    for _ in range(2):
        await asyncio.sleep(0)
    await pool.release(conn)


@pytest.mark.parametrize("start", ["idle", "empty", "busy"])
async def test_cancellation_at_every_await_point_leaks_nothing(start: str) -> None:
    """Cancel a user after 0, 1, 2, ... loop steps until it finishes on its own.

    Each step lets the task advance past one suspension point, so together the
    runs cancel it at every await of acquire (wait, connect, validate), use
    and release (commit, reset). After each run the pool must be settled.
    """
    factory = YieldingFactory()
    async with AsyncPool(
        factory,
        min_size=1 if start == "idle" else 0,
        max_size=1,
        validate="always",
        reset=_reset,
        timeout=5,
        max_uses=1 if start == "empty" else None,  # "empty": a new connect each run
    ) as pool:
        await pool.open(wait=start == "idle")

        async def user() -> None:
            async with pool.connection() as conn:
                await conn.cursor()

        steps = 0
        while True:
            tasks = [asyncio.create_task(user())]
            if start == "busy":
                # Someone else holds the only connection for two more steps:
                # the user waits, then is handed it.
                holder = await pool.acquire()
                tasks.append(asyncio.create_task(_release_later(pool, holder)))
            task = tasks[0]
            for _ in range(steps):
                await asyncio.sleep(0)
            finished = task.done()
            task.cancel()
            outcome = (await asyncio.gather(*tasks, return_exceptions=True))[0]
            assert outcome is None or isinstance(outcome, asyncio.CancelledError)
            for _ in range(50):  # let background connects and closes finish
                stats = pool.stats()
                if (
                    stats.connecting == 0
                    and stats.in_use == 0
                    and stats.size == open_count(factory)
                ):
                    break
                await asyncio.sleep(0)
            stats = pool.stats()
            assert stats.in_use == 0 and stats.waiting == 0, (steps, stats)
            assert stats.size == open_count(factory) <= 1, (steps, stats)
            if finished and steps > 10:
                break
            steps += 1
            assert steps < 500
        # Still fully usable.
        async with pool.connection() as conn:
            await conn.cursor()


class SlowClosing(FakeConnection):
    """Closing takes a moment (a goodbye message to the server)."""

    async def close(self) -> None:
        await asyncio.sleep(0.05)
        self.closed = True


class SlowClosingFactory(Factory):
    async def __call__(self) -> FakeConnection:
        conn = SlowClosing(len(self.made) + 1)
        self.made.append(conn)
        return conn


async def test_cancelled_while_closing_a_retired_connection_still_closes_it() -> None:
    factory = SlowClosingFactory()
    async with AsyncPool(factory, min_size=0, max_size=1, max_uses=1) as pool:
        conn = await pool.acquire()
        # Its last use: the release retires it and closes it, slowly.
        task = asyncio.create_task(pool.release(conn))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert pool.stats().size == 0 and open_count(factory) == 1
        # The interrupted close is finished in the background.
        for _ in range(100):
            if open_count(factory) == 0:
                break
            await asyncio.sleep(0.01)
        assert open_count(factory) == 0


async def test_acquire_works_wherever_a_coroutine_works() -> None:
    import anyio

    async with AsyncPool(Factory(), min_size=0, max_size=4) as pool:
        task = asyncio.create_task(pool.acquire(timeout=2))
        conns = [await task]
        conns.append(await asyncio.wait_for(pool.acquire(), 1))
        conns.extend(await asyncio.gather(pool.acquire(), pool.acquire()))
        assert pool.stats().in_use == 4
        for conn in conns:
            await pool.release(conn)
        conn = await asyncio.shield(pool.acquire())
        await pool.release(conn)
        got: list[FakeConnection] = []

        async def borrow() -> None:
            got.append(await pool.acquire())

        async with anyio.create_task_group() as tg:
            tg.start_soon(borrow)
            tg.start_soon(borrow)
        assert len(got) == 2 and pool.stats().in_use == 2
        for conn in got:
            await pool.release(conn)
        # Still an async context manager.
        async with pool.acquire() as conn:
            assert pool.stats().in_use == 1
        assert pool.stats().acquires == 8 and pool.stats().in_use == 0


async def test_an_acquire_never_awaited_starts_nothing() -> None:
    import gc
    import warnings

    factory = Factory()
    async with AsyncPool(factory, min_size=0) as pool:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            pool.acquire()
            gc.collect()
        assert factory.calls == 0 and pool.stats().waiting == 0


async def test_cancelled_tasks_wrapping_acquire_leak_nothing() -> None:
    async with AsyncPool(Factory(delay=0.01), min_size=0, max_size=2) as pool:
        for delay in (0, 0.001, 0.005, 0.02):
            tasks = [asyncio.create_task(pool.acquire(timeout=5)) for _ in range(4)]
            await asyncio.sleep(delay)
            for task in tasks:
                task.cancel()
            done = await asyncio.gather(*tasks, return_exceptions=True)
            for result in done:
                if isinstance(result, FakeConnection):  # finished before the cancel
                    await pool.release(result)
            stats = pool.stats()
            assert stats.in_use == 0 and stats.waiting == 0


def test_waiter_deadlines_work_in_a_new_loop_after_fork() -> None:
    # A forked child starts the pool over (_after_fork) and may use it from a
    # new event loop: the waiters' timer is the new loop's, not the parent's.
    pool = AsyncPool(Factory(), min_size=1, max_size=1)
    parent = asyncio.new_event_loop()

    async def leave_a_waiter() -> None:
        await pool.open(wait=True)
        await pool.acquire()
        waiter = asyncio.ensure_future(pool.acquire(timeout=0.3))
        while pool.stats().waiting < 1:
            await asyncio.sleep(0)
        waiter.cancel()  # its heap entry and the armed timer stay behind
        # The watcher for closed lent connections sees no waiter left and ends
        # (a task left pending would be destroyed with the parent's loop).
        for _ in range(100):
            if not pool._watching:
                break
            await asyncio.sleep(0.01)
        assert not pool._watching

    parent.run_until_complete(leave_a_waiter())
    parent.close()
    pool._after_fork()

    async def in_the_child() -> float:
        held = await pool.acquire()
        started = time.monotonic()
        with pytest.raises(PoolTimeout):
            await asyncio.wait_for(pool.acquire(timeout=0.5), 3.0)
        waited = time.monotonic() - started
        await pool.release(held)
        await pool.close()
        return waited

    waited = asyncio.run(in_the_child())
    assert 0.45 <= waited < 2.0


def _blocking_configure(started: asyncio.Event) -> Any:
    async def configure(conn: FakeConnection) -> None:
        started.set()
        await asyncio.sleep(60)

    return configure


async def test_connect_cancelled_in_the_configure_hook_closes_the_connection() -> None:
    """close() cancels a background connect whose configure hook runs: the new
    connection is closed then, not left to the garbage collector."""
    factory = Factory()
    started = asyncio.Event()
    pool = AsyncPool(
        factory, min_size=1, max_size=1, configure=_blocking_configure(started)
    )
    await pool.open()
    await asyncio.wait_for(started.wait(), 5)
    await pool.close(timeout=0)
    assert len(factory.made) == 1 and factory.made[0].closed
    assert pool.stats().connecting == 0


async def test_connect_in_the_caller_cancelled_closes_the_connection() -> None:
    """The same for a connect made in the caller (``_open_for_caller``, which
    the SQLAlchemy integration uses), cancelled with the caller's task."""
    factory = Factory()
    started = asyncio.Event()
    async with AsyncPool(
        factory, min_size=0, max_size=1, configure=_blocking_configure(started)
    ) as pool:
        task = asyncio.ensure_future(pool._open_for_caller())
        await asyncio.wait_for(started.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert len(factory.made) == 1 and factory.made[0].closed
        assert pool.stats().connecting == 0 and pool.stats().size == 0
