"""Contract tests of the pool shell against a scripted fake driver.

Written once for AsyncPool; ``tools/gen_sync.py`` generates the Pool version in
``tests/unit/_sync/``. Waiting callers run as background tasks (threads in the
twin) through the same spawn/join helpers the pool itself uses.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Literal

import pytest

import poolkeeper
from poolkeeper import (
    AsyncPool,
    ConnectionLeakWarning,
    PoolClosed,
    PoolError,
    PoolTimeout,
    QueryTimeout,
    TooManyWaiters,
)
from poolkeeper._concurrency import ajoin, asleep, aspawn
from poolkeeper._core.state import PoolState

pytestmark = pytest.mark.anyio

#: For tests that patch a function or method of the core: the compiled build
#: (scripts/test-compiled) calls those natively, past any patch; the pure
#: build, the same source, runs them.
patches_the_core = pytest.mark.skipif(
    poolkeeper.BUILD == "compiled",
    reason="patches the core, which the compiled build calls natively",
)


class FakeConnection:
    """A DB-API-shaped connection recording what the pool did to it."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.closed = False
        self.commits = 0
        self.rollbacks = 0
        self.fail_commit = False

    async def commit(self) -> None:
        if self.fail_commit:
            raise RuntimeError("commit failed")
        self.commits += 1

    async def rollback(self) -> None:
        self.rollbacks += 1

    async def close(self) -> None:
        self.closed = True

    async def cursor(self) -> FakeCursor:
        if self.closed:
            raise ConnectionError("connection is closed")
        return FakeCursor()

    def __repr__(self) -> str:
        return f"FakeConnection({self.n})"


class FakeCursor:
    """Just enough cursor for the generic ``SELECT 1`` ping."""

    async def execute(self, query: str) -> None:
        assert query == "SELECT 1"

    async def fetchall(self) -> list[tuple[int]]:
        return [(1,)]

    async def close(self) -> None:
        pass


class Factory:
    """A connect callable with scripted failures and latency."""

    def __init__(
        self,
        *,
        fail: int = 0,
        delay: float = 0.0,
        error: type[Exception] = ConnectionResetError,
    ) -> None:
        self.fail = fail
        self.delay = delay
        self.error = error  # what a failing connect raises (default: transient)
        self.calls = 0
        self.made: list[FakeConnection] = []

    async def __call__(self) -> FakeConnection:
        self.calls += 1
        if self.delay:
            await asleep(self.delay)
        if self.fail:
            self.fail -= 1
            raise self.error("fake server: connection failed")
        conn = FakeConnection(len(self.made) + 1)
        self.made.append(conn)
        return conn


def open_count(factory: Factory) -> int:
    return sum(not c.closed for c in factory.made)


async def test_connection_commits_on_normal_exit() -> None:
    factory = Factory()
    async with AsyncPool(factory, min_size=1, max_size=2) as pool:
        async with pool.connection() as conn:
            assert isinstance(conn, FakeConnection)
        assert (conn.commits, conn.rollbacks) == (1, 0)
        stats = pool.stats()
        assert stats.acquires == 1 and stats.in_use == 0
        assert stats.size == stats.idle + stats.in_use


async def test_connection_rolls_back_on_exception() -> None:
    factory = Factory()
    async with AsyncPool(factory) as pool:
        with pytest.raises(KeyError):
            async with pool.connection() as conn:
                raise KeyError("boom")
        assert (conn.commits, conn.rollbacks) == (0, 1)
        assert pool.stats().idle == 1  # still usable, kept


async def test_failed_commit_raises_and_discards() -> None:
    factory = Factory()
    async with AsyncPool(factory, min_size=0) as pool:
        with pytest.raises(RuntimeError, match="commit failed"):
            async with pool.connection() as conn:
                conn.fail_commit = True
        assert conn.closed and pool.stats().size == 0


async def test_acquire_release_and_double_release() -> None:
    async with AsyncPool(Factory()) as pool:
        conn = await pool.acquire()
        assert pool.stats().in_use == 1
        await pool.release(conn)
        assert conn.rollbacks == 1  # release never commits
        with pytest.raises(PoolError, match="not checked out"):
            await pool.release(conn)
        with pytest.raises(PoolError, match="not checked out"):
            await pool.release(FakeConnection(99))


async def test_an_acquired_connection_can_be_taken_out_for_its_user_to_close() -> None:
    # The SQLAlchemy integration sheds overflow with _take_out() on
    # connections lent by acquire(), which the pool holds only weakly.
    async with AsyncPool(Factory(), min_size=0, max_size=2) as pool:
        conn = await pool.acquire()
        assert pool._take_out(conn, None) is True
        stats = pool.stats()
        assert (stats.in_use, stats.size) == (0, 0)
        assert pool._take_out(conn, None) is False  # not the pool's any more


async def test_timeout_and_per_call_override() -> None:
    async with AsyncPool(Factory(), min_size=1, max_size=1, timeout=0.2) as pool:
        held = await pool.acquire()
        started = time.monotonic()
        with pytest.raises(PoolTimeout) as info:
            await pool.acquire()
        assert 0.18 <= time.monotonic() - started < 1.0
        assert info.value.timeout == pytest.approx(0.2)
        assert "timed out after 0.2 s" in str(info.value)
        started = time.monotonic()
        with pytest.raises(TimeoutError):  # PoolTimeout is a TimeoutError
            await pool.acquire(timeout=0.05)
        assert time.monotonic() - started < 0.18
        assert pool.stats().timeouts == 2 and pool.stats().waiting == 0
        await pool.release(held)


#: This file's lines, to find the acquiring sites a message names.
SOURCE_LINES = Path(__file__).read_text().splitlines()


async def test_timeout_names_where_acquire_holds_every_connection() -> None:
    async with AsyncPool(Factory(), min_size=0, max_size=3, timeout=0.05) as pool:
        held = [await pool.acquire() for _ in range(2)]  # site A (twice)
        async with pool.connection():
            # One held by a connection() block: no site to name.
            with pytest.raises(PoolTimeout) as info:
                await pool.acquire()
            assert "held through acquire()" not in str(info.value)
        held.append(await pool.acquire())  # site B
        with pytest.raises(PoolTimeout) as info:
            await pool.acquire()
        message = str(info.value)
        lines = [
            n
            for n, text in enumerate(SOURCE_LINES, 1)
            if "# site A" in text or "# site B" in text
        ]
        assert (
            f"every connection is held through acquire(), from "
            f"{__file__}:{lines[0]} (x2), {__file__}:{lines[1]}"
        ) in message, message
        for conn in held:
            await pool.release(conn)


async def test_max_waiting_rejects_at_once() -> None:
    async with AsyncPool(Factory(), min_size=1, max_size=1, max_waiting=1) as pool:
        held = await pool.acquire()
        results: list[object] = []

        async def waiter() -> None:
            async with pool.connection() as conn:
                results.append(conn)

        task = aspawn(waiter)
        while pool.stats().waiting < 1:
            await asleep(0.001)
        started = time.monotonic()
        with pytest.raises(TooManyWaiters) as info:
            await pool.acquire(timeout=5)
        assert time.monotonic() - started < 0.1
        assert info.value.waiting == 1 and pool.stats().rejections == 1
        await pool.release(held)
        await ajoin([task], 5.0)
        assert results == [held]


async def test_waiters_are_served_in_fifo_order() -> None:
    async with AsyncPool(Factory(), min_size=1, max_size=1) as pool:
        held = await pool.acquire()
        order: list[int] = []

        async def waiter(i: int) -> None:
            async with pool.connection():
                order.append(i)

        tasks = []
        for i in range(6):
            tasks.append(aspawn(waiter, i))
            while pool.stats().waiting < i + 1:
                await asleep(0.001)
        await pool.release(held)
        await ajoin(tasks, 5.0)
        assert order == list(range(6))


async def test_waiters_with_different_timeouts_each_time_out_on_time() -> None:
    # Deadlines out of queue order: a later, shorter wait times out first,
    # each at its own deadline, and those still waiting keep their order.
    timeouts = [0.6, 0.1, 10.0, 0.35, 10.0, 0.2, 10.0]
    outcomes: dict[int, tuple[str, float]] = {}
    order: list[int] = []
    async with AsyncPool(Factory(), min_size=1, max_size=1) as pool:
        held = await pool.acquire()

        async def waiter(i: int) -> None:
            started = time.monotonic()
            try:
                async with pool.connection(timeout=timeouts[i]):
                    order.append(i)
                    outcomes[i] = ("served", time.monotonic() - started)
            except PoolTimeout:
                outcomes[i] = ("timeout", time.monotonic() - started)

        tasks = []
        for i in range(len(timeouts)):
            tasks.append(aspawn(waiter, i))
            while pool.stats().waiting < i + 1:
                await asleep(0.001)
        while len(outcomes) < 4:
            await asleep(0.01)
        assert pool.stats().waiting == 3 and pool.stats().timeouts == 4
        await pool.release(held)
        await ajoin(tasks, 5.0)
    for i, limit in enumerate(timeouts):
        kind, waited = outcomes[i]
        if limit < 1:
            assert kind == "timeout" and limit * 0.9 <= waited < limit + 0.3, (
                i,
                waited,
            )
    assert order == [2, 4, 6]


async def test_close_wakes_waiters_with_pool_closed() -> None:
    factory = Factory()
    pool = AsyncPool(factory, min_size=1, max_size=1)
    await pool.open()
    held = await pool.acquire()
    errors: list[BaseException] = []

    async def waiter() -> None:
        try:
            await pool.acquire(timeout=10)
        except PoolClosed as exc:
            errors.append(exc)

    tasks = [aspawn(waiter) for _ in range(3)]
    while pool.stats().waiting < 3:
        await asleep(0.001)
    started = time.monotonic()
    await pool.close()
    await ajoin(tasks, 5.0)
    assert len(errors) == 3 and time.monotonic() - started < 1.0
    assert open_count(factory) == 1  # in use: closed only when it comes back
    await pool.release(held)
    assert open_count(factory) == 0
    with pytest.raises(PoolClosed):
        await pool.acquire()
    with pytest.raises(PoolClosed):
        await pool.open()


async def test_broken_connection_is_discarded_and_replaced() -> None:
    factory = Factory()
    async with AsyncPool(factory, min_size=1, max_size=2) as pool:
        conn = await pool.acquire()
        conn.closed = True  # the driver reports it closed (server went away)
        await pool.release(conn)
        stats = pool.stats()
        assert stats.closed_by_reason["broken"] == 1
        again = await pool.acquire()
        assert again is not conn
        await pool.release(again)
        assert pool.stats().size == open_count(factory)


async def test_failing_check_is_invisible_to_the_caller() -> None:
    bad: set[int] = set()

    def check(conn: FakeConnection) -> None:
        if conn.n in bad:
            raise ConnectionError("stale")

    factory = Factory()
    async with AsyncPool(factory, min_size=1, max_size=2, check=check) as pool:
        await pool.open(wait=True)
        bad.add(1)
        async with pool.connection() as conn:
            assert conn.n == 2
        assert factory.made[0].closed
        assert pool.stats().closed_by_reason["check"] == 1


async def test_hooks_configure_and_reset() -> None:
    configured: list[int] = []
    resets: list[int] = []

    def configure(conn: FakeConnection) -> None:
        configured.append(conn.n)

    def reset(conn: FakeConnection) -> None:
        resets.append(conn.n)
        if conn.n == 1 and len(resets) == 2:
            raise ValueError("reset hook failure")

    factory = Factory()
    async with AsyncPool(
        factory, min_size=1, max_size=1, configure=configure, reset=reset
    ) as pool:
        for _ in range(3):
            async with pool.connection():
                pass
        # The failing reset discarded connection 1; connection 2 replaced it.
        assert configured == [1, 2] and resets == [1, 1, 2]
        assert factory.made[0].closed and pool.stats().size == 1


async def test_failing_configure_hook_does_not_leak() -> None:
    calls: list[int] = []

    def configure(conn: FakeConnection) -> None:
        calls.append(conn.n)
        if conn.n == 1:
            raise ValueError("configure failure")

    factory = Factory()
    async with AsyncPool(
        factory, min_size=0, configure=configure, reconnect_min=0.01
    ) as pool:
        # The hook's own error reaches the caller: no retry fixes a broken hook.
        with pytest.raises(ValueError, match="configure failure"):
            await pool.acquire(timeout=5.0)
        await asleep(0.05)  # past the backoff: the next caller tries again
        async with pool.connection() as conn:
            assert conn.n == 2
        assert factory.made[0].closed and calls == [1, 2]


async def test_unreachable_server_times_out_with_cause() -> None:
    factory = Factory(fail=1000)
    async with AsyncPool(
        factory, min_size=0, timeout=0.3, reconnect_min=0.02, reconnect_max=0.1
    ) as pool:
        with pytest.raises(PoolTimeout) as info:
            await pool.acquire()
        assert isinstance(info.value.__cause__, ConnectionResetError)
        stats = pool.stats()
        assert stats.connect_errors >= 2 and stats.size == 0
        # Backoff keeps the attempts few: at most one per reconnect_min.
        assert stats.connect_errors <= 0.3 / 0.02 + 2


async def test_pool_recovers_after_connect_failures() -> None:
    factory = Factory(fail=3)
    async with AsyncPool(
        factory, min_size=2, reconnect_min=0.01, reconnect_max=0.05
    ) as pool:
        async with pool.connection(timeout=2.0) as conn:
            assert conn.n == 1
        deadline = time.monotonic() + 2.0
        while pool.stats().size < 2 and time.monotonic() < deadline:
            await asleep(0.01)
        assert pool.stats().size == 2 and pool.stats().connect_errors == 3


async def test_open_wait_fails_fast_and_closes() -> None:
    pool = AsyncPool(Factory(fail=1000), min_size=2, timeout=5.0)
    started = time.monotonic()
    with pytest.raises(PoolTimeout) as info:
        await pool.open(wait=True)
    assert time.monotonic() - started < 1.0
    assert isinstance(info.value.__cause__, ConnectionResetError)
    with pytest.raises(PoolClosed):
        await pool.acquire()


async def test_open_wait_fills_to_min_size() -> None:
    factory = Factory(delay=0.01)
    async with AsyncPool(factory, min_size=4, max_size=4) as pool:
        await pool.open(wait=True, timeout=5.0)
        assert pool.stats().size == 4 and pool.stats().idle == 4


async def test_lazy_open_on_first_use() -> None:
    pool = AsyncPool(Factory(), min_size=0)
    async with pool.connection() as conn:
        assert conn.n == 1
    await pool.close()


async def test_max_uses_and_max_lifetime_retire() -> None:
    factory = Factory()
    async with AsyncPool(factory, min_size=1, max_size=1, max_uses=2) as pool:
        for _ in range(4):
            async with pool.connection():
                pass
        assert pool.stats().closed_by_reason["uses"] == 2
    factory = Factory()
    async with AsyncPool(factory, min_size=1, max_size=1, max_lifetime=0.05) as pool:
        async with pool.connection() as first:
            pass
        await asleep(0.08)
        async with pool.connection() as second:
            assert second is not first
        assert first.closed


async def test_idle_connections_above_min_shrink() -> None:
    factory = Factory()
    async with AsyncPool(factory, min_size=1, max_size=3, max_idle=0.05) as pool:
        conns = [await pool.acquire() for _ in range(3)]
        for conn in conns:
            await pool.release(conn)
        assert pool.stats().size == 3
        deadline = time.monotonic() + 2.0
        while pool.stats().size > 1 and time.monotonic() < deadline:
            await asleep(0.01)
        assert pool.stats().size == 1 and pool.stats().closed_by_reason["idle"] == 2


async def test_resize_grows_and_shrinks() -> None:
    factory = Factory()
    async with AsyncPool(factory, min_size=1, max_size=2) as pool:
        await pool.resize(min_size=3, max_size=3)
        await pool.open(wait=True)
        assert pool.stats().size == 3
        held = await pool.acquire()
        await pool.resize(min_size=0, max_size=1)
        assert pool.stats().size == 1 and pool.stats().max_size == 1
        await pool.release(held)
        assert pool.stats().size == 1
        assert open_count(factory) == 1


async def test_check_pings_idle_and_drops_broken() -> None:
    factory = Factory()
    async with AsyncPool(factory, min_size=2, max_size=2) as pool:
        await pool.open(wait=True)
        factory.made[0].closed = True
        await pool.check()
        assert pool.stats().closed_by_reason["check"] == 1


async def test_repr_names_the_pool() -> None:
    async with AsyncPool(Factory(), name="api") as pool:
        assert "'api'" in repr(pool) and "open" in repr(pool)
    assert "closed" in repr(pool)


async def test_idle_validation_pings_after_the_window() -> None:
    factory = Factory()
    async with AsyncPool(
        factory, min_size=1, max_size=1, validate="idle", validate_after=0.05
    ) as pool:
        async with pool.connection() as first:
            pass
        async with pool.connection():  # used just now: no ping
            pass
        assert pool.stats().validations == 0
        await asleep(0.07)
        first.closed = True  # died while idle: the ping finds out
        async with pool.connection() as conn:
            assert conn is not first
        stats = pool.stats()
        assert stats.closed_by_reason["check"] == 1 and stats.acquires == 3


async def test_never_validate_hands_out_without_ping() -> None:
    async with AsyncPool(Factory(), min_size=1, max_size=1, validate="never") as pool:
        async with pool.connection() as first:
            pass
        await asleep(0.01)
        async with pool.connection() as again:
            assert again is first
        assert pool.stats().validations == 0


async def test_a_broken_connection_makes_idle_siblings_suspect() -> None:
    factory = Factory()
    async with AsyncPool(
        factory, min_size=3, max_size=3, validate="idle", validate_after=60
    ) as pool:
        await pool.open(wait=True)
        a = await pool.acquire()
        for conn in factory.made:
            conn.closed = True  # the server restarted: every session is gone
        await pool.release(a)  # found broken on return
        # Holding all three forces the two idle suspects out: each is pinged,
        # found dead, discarded and replaced, invisibly.
        held = [await pool.acquire() for _ in range(3)]
        assert not any(conn.closed for conn in held)
        for conn in held:
            await pool.release(conn)
        assert pool.stats().closed_by_reason["broken"] == 1
        assert pool.stats().closed_by_reason["check"] == 2


async def test_events_are_emitted_and_listener_errors_ignored() -> None:
    from poolkeeper import PoolEvent

    seen: list[PoolEvent] = []

    def bad(event: PoolEvent) -> None:
        raise RuntimeError("listener bug")

    async with AsyncPool(Factory(), min_size=0, max_size=1, timeout=0.05) as pool:
        for kind in ("connect", "checkout", "checkin", "discard", "timeout"):
            pool.on(kind, seen.append)
            pool.on(kind, bad)
        conn = await pool.acquire()
        with pytest.raises(PoolTimeout):
            await pool.acquire()
        conn.closed = True
        await pool.release(conn)
        pool.off("checkin", seen.append)
    kinds = [e.kind for e in seen]
    assert kinds == ["connect", "checkout", "timeout", "checkin", "discard"]
    assert seen[-1].reason == "broken" and seen[0].pool_name == pool.name
    with pytest.raises(ValueError, match="unknown pool event"):
        pool.on("nope", seen.append)


async def test_discard_events_carry_the_reason() -> None:
    from poolkeeper import PoolEvent

    discards: list[PoolEvent] = []

    async def failing_check(conn: FakeConnection) -> None:
        if conn.n == 2:
            raise RuntimeError("check failed")

    async with AsyncPool(
        Factory(), min_size=0, max_size=2, max_uses=2, check=failing_check
    ) as pool:
        pool.on("discard", discards.append)
        conn = await pool.acquire()  # connection 1
        conn.closed = True
        await pool.release(conn)  # broken
        conn = await pool.acquire()  # 2 fails its check, 3 is handed out
        await pool.release(conn)
        await pool.release(await pool.acquire())  # 3 reaches max_uses
        keep = [await pool.acquire(), await pool.acquire()]
        for held in keep:
            await pool.release(held)
        await pool.resize(min_size=0, max_size=1)
    reasons = [(e.reason, e.conn.n) for e in discards]
    assert reasons[:3] == [("broken", 1), ("check", 2), ("uses", 3)]
    assert [r for r, _ in reasons[3:]] == ["resize", "close"]
    assert all(e.kind == "discard" and e.pool_name == pool.name for e in discards)
    closed = pool.stats().closed_by_reason
    assert {k: v for k, v in closed.items() if v} == {
        "broken": 1,
        "check": 1,
        "uses": 1,
        "resize": 1,
        "close": 1,
    }


@patches_the_core
async def test_stats_holds_the_lock_only_to_copy(monkeypatch) -> None:
    from poolkeeper._core import stats as stats_module

    async with AsyncPool(Factory(), min_size=1, max_size=1) as pool:
        for _ in range(5):
            async with pool.connection():
                pass
        lock_held: list[bool] = []
        quantile = stats_module._quantile

        def spy(ordered: list[float], q: float) -> float:
            lock_held.append(pool._lock.locked())
            return quantile(ordered, q)

        monkeypatch.setattr(stats_module, "_quantile", spy)
        stats = pool.stats()
    assert lock_held and not any(lock_held)
    assert stats.usage_time.count == 5 and stats.acquires == 5
    assert stats.size == stats.idle + stats.in_use == 1
    assert stats.connect_time.count == 1 and stats.connect_time.p99 > 0


@patches_the_core
async def test_a_connection_returned_just_before_queueing_is_taken(
    monkeypatch,
) -> None:
    # The fast path can find the idle stack empty, then the holder returns
    # its connection (no waiter yet, so it goes to the idle stack) before the
    # caller queues. Queueing must look at the idle stack again in the same
    # locked step, or the caller waits out its whole timeout beside an idle
    # connection.
    from poolkeeper._core.entry import PoolEntry
    from poolkeeper._core.state import PoolState

    async with AsyncPool(Factory(), min_size=1, max_size=1, timeout=2.0) as pool:
        async with pool.connection() as first:
            pass
        fast_acquire = PoolState.acquire
        declined: list[bool] = []

        def acquire_saw_nothing(
            self: PoolState, now: float, lock: object
        ) -> PoolEntry | None:
            if not declined:  # as if the holder returned a moment later
                declined.append(True)
                return None
            return fast_acquire(self, now, lock)

        monkeypatch.setattr(PoolState, "acquire", acquire_saw_nothing)
        started = time.monotonic()
        async with pool.connection() as conn:
            assert conn is first
        assert declined and time.monotonic() - started < 0.5
        stats = pool.stats()
        assert stats.timeouts == 0 and stats.waiting == 0 and stats.idle == 1


async def test_log_levels_and_pool_name(caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="poolkeeper")

    def bad_listener(event: object) -> None:
        raise RuntimeError("listener bug")

    async with AsyncPool(
        Factory(fail=1), min_size=1, max_size=1, max_uses=1, name="logs"
    ) as pool:
        pool.on("checkout", bad_listener)
        await pool.release(await pool.acquire())
    records = [r for r in caplog.records if r.name.startswith("poolkeeper")]
    by_level: dict[int, list[str]] = {}
    for record in records:
        by_level.setdefault(record.levelno, []).append(record.getMessage())
        assert "'logs'" in record.getMessage()
    warnings = by_level[logging.WARNING]
    assert any("connect to" in m and "retrying in" in m for m in warnings)
    debug = by_level[logging.DEBUG]
    assert any("connection opened" in m for m in debug)
    assert any("closing a connection (uses)" in m for m in debug)
    assert any("listener" in m for m in by_level[logging.ERROR])


async def test_keepalive_pings_idle_connections() -> None:
    factory = Factory()
    async with AsyncPool(
        factory, min_size=2, max_size=2, keepalive=0.02, validate="never"
    ) as pool:
        await pool.open(wait=True)
        factory.made[0].closed = True  # killed by a firewall while idle
        deadline = time.monotonic() + 2.0
        while pool.stats().closed_by_reason["check"] < 1:
            assert time.monotonic() < deadline
            await asleep(0.01)
        while pool.stats().size < 2:
            assert time.monotonic() < deadline
            await asleep(0.01)
        assert open_count(factory) == 2


async def test_leak_detection_reports_once_with_stack() -> None:
    from poolkeeper import PoolEvent

    leaks: list[PoolEvent] = []
    async with AsyncPool(Factory(), min_size=0, leak_timeout=0.03) as pool:
        pool.on("leak", leaks.append)
        conn = await pool.acquire()
        with pytest.warns(ConnectionLeakWarning) as warned:
            await asleep(0.2)
        assert pool.stats().leaks == 1 and len(leaks) == 1
        assert leaks[0].stack is not None
        assert "test_leak_detection_reports_once_with_stack" in leaks[0].stack
        assert len(warned) == 1
        assert "test_leak_detection_reports_once_with_stack" in str(warned[0].message)
        await pool.release(conn)


async def test_leak_warning_turned_error_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # pytest runs with filterwarnings=error: the housekeeper must survive it.
    async with AsyncPool(Factory(), min_size=0, leak_timeout=0.03) as pool:
        first = await pool.acquire()
        await asleep(0.2)
        assert pool.stats().leaks == 1
        assert "held for" in caplog.text and "acquired at" in caplog.text
        # Housekeeping still runs: a second leak is found too.
        second = await pool.acquire()
        await asleep(0.2)
        assert pool.stats().leaks == 2
        await pool.release(first)
        await pool.release(second)


class AuthError(Exception):
    """Like a driver's error for a wrong password (SQLSTATE 28P01)."""

    sqlstate = "28P01"


async def test_bad_credentials_reach_the_caller_at_once() -> None:
    calls: list[int] = []

    async def connect() -> FakeConnection:
        calls.append(1)
        raise AuthError("password authentication failed for user x")

    async with AsyncPool(connect, min_size=0, timeout=5.0, reconnect_min=0.5) as pool:
        started = time.monotonic()
        with pytest.raises(AuthError, match="password authentication failed") as info:
            await pool.acquire()
        assert time.monotonic() - started < 0.5
        # A copy per caller, chained to the error the connect raised.
        assert isinstance(info.value.__cause__, AuthError)
        stats = pool.stats()
        assert stats.timeouts == 0 and stats.waiting == 0 and stats.connect_errors == 1
        # Within the backoff, the next caller gets the same error without a
        # new attempt (no hammering of a server that locks accounts).
        with pytest.raises(AuthError):
            await pool.acquire()
        assert len(calls) == 1


async def test_refused_before_any_connect_reaches_the_caller_at_once() -> None:
    factory = Factory(fail=1000, error=ConnectionRefusedError)
    async with AsyncPool(factory, min_size=0, timeout=5.0, reconnect_min=0.05) as pool:
        started = time.monotonic()
        with pytest.raises(ConnectionRefusedError):
            await pool.acquire()
        assert time.monotonic() - started < 0.5
        await asleep(0.1)  # past the backoff: a new caller tries again
        with pytest.raises(ConnectionRefusedError):
            await pool.acquire()
        assert factory.calls == 2


async def test_refused_after_a_success_waits_and_names_the_error() -> None:
    factory = Factory()
    async with AsyncPool(
        factory, min_size=0, max_size=1, timeout=0.3, reconnect_min=0.02
    ) as pool:
        conn = await pool.acquire()
        conn.closed = True  # the server went away under it
        await pool.release(conn)
        factory.fail, factory.error = 1000, ConnectionRefusedError
        started = time.monotonic()
        with pytest.raises(PoolTimeout) as info:
            await pool.acquire()
        assert time.monotonic() - started >= 0.3
        assert isinstance(info.value.__cause__, ConnectionRefusedError)
        assert (
            "last connect error: ConnectionRefusedError: fake server: connection failed"
            in str(info.value)
        )


async def test_waiters_queued_behind_a_failing_connect_all_get_its_error() -> None:
    factory = Factory(fail=1000, delay=0.05, error=ConnectionRefusedError)
    async with AsyncPool(factory, min_size=0, timeout=5.0) as pool:
        results: list[BaseException] = []

        async def caller() -> None:
            try:
                await pool.acquire()
            except ConnectionRefusedError as exc:
                results.append(exc)

        started = time.monotonic()
        await ajoin([aspawn(caller) for _ in range(3)], 5.0)
        assert time.monotonic() - started < 1.0
        assert len(results) == 3
        assert len({id(r) for r in results}) == 3  # one copy per caller
        assert pool.stats().waiting == 0 and pool.stats().timeouts == 0


async def test_timeout_zero_connects_on_an_empty_pool() -> None:
    factory = Factory(delay=0.05)
    async with AsyncPool(factory, min_size=0, max_size=1) as pool:
        conn = await pool.acquire(timeout=0)
        assert conn.n == 1
        # Full: no room to connect, so it never queues.
        started = time.monotonic()
        with pytest.raises(PoolTimeout):
            await pool.acquire(timeout=0)
        assert time.monotonic() - started < 0.04
        await pool.release(conn)
        assert (await pool.acquire(timeout=0)) is conn
        await pool.release(conn)


async def test_timeout_zero_gets_a_pool_timeout_naming_a_transient_error() -> None:
    factory = Factory(fail=1, delay=0.02)
    async with AsyncPool(factory, min_size=0, reconnect_min=0.5) as pool:
        events: list[object] = []
        pool.on("timeout", events.append)
        with pytest.raises(PoolTimeout, match="ConnectionResetError") as info:
            await pool.acquire(timeout=0)
        assert len(events) == 1
        assert isinstance(info.value.__cause__, ConnectionResetError)
        # Backing off: no wait for the retry either.
        with pytest.raises(PoolTimeout):
            await pool.acquire(timeout=0)
        assert factory.calls == 1 and pool.stats().timeouts == 2


@pytest.mark.parametrize("fair", [False, "bounded"])
async def test_unfair_mode_serves_everyone_and_times_out_cleanly(
    fair: bool | Literal["bounded"],
) -> None:
    factory = Factory()
    async with AsyncPool(factory, min_size=2, max_size=2, fair=fair) as pool:
        done: list[int] = []

        async def user(i: int) -> None:
            for _ in range(20):
                async with pool.connection():
                    await asleep(0)
            done.append(i)

        tasks = [aspawn(user, i) for i in range(8)]
        await ajoin(tasks, 10.0)
        assert sorted(done) == list(range(8))
        stats = pool.stats()
        assert stats.acquires == 160 and stats.in_use == 0 and stats.waiting == 0
        assert stats.size == 2 == open_count(factory)
        held = [await pool.acquire(), await pool.acquire()]
        with pytest.raises(PoolTimeout):
            await pool.acquire(timeout=0.05)
        for conn in held:
            await pool.release(conn)
        assert pool.stats().idle == 2


async def test_query_timeout_discards_the_connection_and_raises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from poolkeeper import PoolEvent

    discards: list[PoolEvent] = []
    factory = Factory()
    async with AsyncPool(
        factory, name="qt-pool", min_size=1, query_timeout=0.05
    ) as pool:
        pool.on("discard", discards.append)
        with pytest.raises(QueryTimeout) as raised:  # noqa: PT012
            async with pool.connection():
                # A generic DB-API connection can't say whether a command runs:
                # held past query_timeout counts as stuck.
                await asleep(0.3)
                raise ConnectionError("the driver's error")
        assert isinstance(raised.value.__cause__, ConnectionError)
        assert raised.value.timeout == 0.05 and raised.value.pool_name == "qt-pool"
        stats = pool.stats()
        assert stats.query_timeouts == 1 and stats.in_use == 0 and stats.waiting == 0
        assert stats.closed_by_reason["query_timeout"] == 1
        assert [e.reason for e in discards] == ["query_timeout"]
        assert factory.made[0].closed
        warnings = [r for r in caplog.records if r.levelname == "WARNING"]
        assert any(
            "qt-pool" in r.getMessage() and "query_timeout=0.05" in r.getMessage()
            for r in warnings
        )
        # The generic adapter cannot abort: said once, at the first connect
        # (a PoolWarning; logged, as the test run turns warnings into errors),
        # never per stuck connection.
        said = [r.getMessage() for r in warnings if "cannot cut" in r.getMessage()]
        assert len(said) == 1 and "qt-pool" in said[0]
        assert not any("could not abort" in r.getMessage() for r in warnings)
        # A replacement is opened; a short checkout is left alone.
        async with pool.connection() as conn:
            assert conn is not factory.made[0]
        assert pool.stats().query_timeouts == 1


async def test_query_timeout_normal_exit_of_an_aborted_block_raises() -> None:
    # The transaction of a generic DB-API connection is unknown: work may be
    # lost, so a normal exit must not look like success.
    async with AsyncPool(Factory(), min_size=1, query_timeout=0.05) as pool:
        with pytest.raises(QueryTimeout) as raised:
            async with pool.connection():
                await asleep(0.3)
        assert raised.value.__cause__ is None
        assert pool.stats().closed_by_reason["query_timeout"] == 1


async def test_query_timeout_with_acquire_and_release() -> None:
    async with AsyncPool(Factory(), min_size=1, query_timeout=0.05) as pool:
        conn = await pool.acquire()
        await asleep(0.3)
        await pool.release(conn)  # no error of its own: the caller saw the driver's
        stats = pool.stats()
        assert stats.query_timeouts == 1 and stats.in_use == 0
        assert stats.closed_by_reason["query_timeout"] == 1
        again = await pool.acquire()
        assert again is not conn
        await pool.release(again)


async def test_query_timeout_leaves_short_checkouts_alone() -> None:
    async with AsyncPool(Factory(), min_size=1, query_timeout=0.5) as pool:
        for _ in range(5):
            async with pool.connection():
                await asleep(0.05)
        stats = pool.stats()
        assert stats.query_timeouts == 0 and stats.connections_created == 1


async def test_query_timeout_leaves_the_application_s_own_errors_alone() -> None:
    # Held past query_timeout, the connection is aborted; an error the
    # application raises afterwards is its own, not a QueryTimeout.
    async with AsyncPool(Factory(), min_size=1, query_timeout=0.05) as pool:
        with pytest.raises(ValueError, match="the application's"):  # noqa: PT012
            async with pool.connection():
                await asleep(0.3)
                raise ValueError("the application's")
        stats = pool.stats()
        assert stats.query_timeouts == 1 and stats.in_use == 0


async def test_query_timeout_leaves_the_application_s_own_timeouts_alone() -> None:
    # QueryTimeout is a TimeoutError too: the application's own timeout (or a
    # poolkeeper error from another pool) must come out as it went in.
    async with AsyncPool(Factory(), min_size=1, query_timeout=0.05) as pool:
        with pytest.raises(TimeoutError) as raised:  # noqa: PT012
            async with pool.connection():
                await asleep(0.3)
                raise TimeoutError("the application's own deadline")
        assert type(raised.value) is TimeoutError
        with pytest.raises(PoolTimeout) as pool_error:  # noqa: PT012
            async with pool.connection():
                await asleep(0.3)
                raise PoolTimeout("another pool's", pool_name="other", timeout=1.0)
        assert pool_error.value.pool_name == "other"
        assert pool.stats().query_timeouts == 2


# -- connections not given back ------------------------------------------------


async def forgetful_connect() -> FakeConnection:
    """A connect callable that keeps no reference to what it makes."""
    return FakeConnection(0)


async def test_dropped_connection_is_taken_back_with_the_acquiring_line() -> None:
    import gc
    import sys
    import warnings

    async with AsyncPool(forgetful_connect, min_size=0, max_size=1) as pool:
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            conn = await pool.acquire()
            line = sys._getframe().f_lineno - 1
            del conn
            gc.collect()
            started = time.monotonic()
            conn = await pool.acquire(timeout=5)
            assert time.monotonic() - started < 1.0
        [warning] = [w for w in record if w.category is ConnectionLeakWarning]
        assert (warning.filename, warning.lineno) == (__file__, line)
        assert f"acquired at {__file__}:{line} was dropped" in str(warning.message)
        stats = pool.stats()
        assert (stats.leaks, stats.closed_by_reason["leaked"], stats.size) == (1, 1, 1)
        await pool.release(conn)


async def test_closed_connection_is_taken_back_and_its_release_accepted() -> None:
    import warnings

    factory = Factory()
    async with AsyncPool(factory, min_size=0, max_size=1) as pool:
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            closed = await pool.acquire()
            await closed.close()
            conn = await pool.acquire(timeout=5)
        assert conn is not closed
        assert [w.category for w in record] == [ConnectionLeakWarning]
        assert "was closed without release()" in str(record[0].message)
        await pool.release(closed)  # late, but accepted quietly
        await pool.release(conn)
        with pytest.raises(PoolError, match="not checked out"):
            await pool.release(conn)
        assert pool.stats().leaks == 1


async def test_released_connections_are_never_taken_back() -> None:
    """Held weakly only while lent by acquire(): a released connection that
    its last user drops stays in the pool, as does one held by connection()."""
    import gc

    async with AsyncPool(forgetful_connect, min_size=0, max_size=1) as pool:
        conn = await pool.acquire()
        await pool.release(conn)
        del conn
        gc.collect()
        assert pool.stats().idle == 1
        async with pool.connection() as conn:
            await conn.close()  # closed inside connection(): discarded on exit
            with pytest.raises(PoolTimeout):
                async with pool.connection(timeout=0.05):
                    pass
        stats = pool.stats()
        assert (stats.leaks, stats.closed_by_reason["leaked"]) == (0, 0)
        assert stats.closed_by_reason["broken"] == 1


class Interrupt(BaseException):
    """What a listener may raise past the event bus (like KeyboardInterrupt)."""


@pytest.mark.parametrize("path", ["fast", "slow"])
async def test_a_checkout_listener_raising_base_exception_leaks_nothing(
    path: str,
) -> None:
    factory = Factory()
    # The slow path: a check hook makes every checkout take it.
    check = (lambda conn: None) if path == "slow" else None
    async with AsyncPool(factory, min_size=1, max_size=1, check=check) as pool:
        await pool.open(wait=True)

        def listener(event: object) -> None:
            raise Interrupt

        pool.on("checkout", listener)
        for _ in range(2):
            with pytest.raises(Interrupt):
                await pool.acquire(timeout=1)
            with pytest.raises(Interrupt):
                async with pool.connection(timeout=1):
                    pass
        pool.off("checkout", listener)
        stats = pool.stats()
        assert stats.in_use == 0 and stats.idle == 1 and stats.acquires == 0
        # The only connection is still there to be had, at once.
        conn = await pool.acquire(timeout=0)
        assert conn is factory.made[0]
        await pool.release(conn)
        assert pool.stats().acquires == 1


@pytest.mark.parametrize("reset", [False, True])
async def test_a_checkin_listener_raising_base_exception_strands_nothing(
    reset: bool,
) -> None:
    """The connection goes back before what the listener raised is raised:
    release(), a connection() block's exit, and (a reset hook) the slow return."""
    factory = Factory()

    async def no_reset(conn: object) -> None:
        pass

    async with AsyncPool(
        factory, min_size=1, max_size=1, reset=no_reset if reset else None
    ) as pool:
        await pool.open(wait=True)

        def listener(event: object) -> None:
            raise Interrupt

        pool.on("checkin", listener)
        for _ in range(2):
            conn = await pool.acquire(timeout=1)
            with pytest.raises(Interrupt):
                await pool.release(conn)
            assert pool.stats().in_use == 0
            with pytest.raises(Interrupt):
                async with pool.connection(timeout=1):
                    pass
            assert pool.stats().in_use == 0
        pool.off("checkin", listener)
        stats = pool.stats()
        assert stats.idle == 1 and stats.acquires == 4
        # The only connection is still there to be had, at once.
        conn = await pool.acquire(timeout=0)
        assert conn is factory.made[0]
        await pool.release(conn)


async def test_a_return_needing_work_probes_the_driver_once() -> None:
    """release() and a connection() block's exit hand the entry and the idle
    probe's answer to the slow return: one probe per return, not two."""
    factory = Factory()  # the generic adapter: never known idle, always ended
    async with AsyncPool(factory, min_size=1, max_size=1) as pool:
        probe = pool._idle_probe
        probed: list[object] = []

        def counting(conn: object) -> object:
            probed.append(conn)
            return probe(conn)

        pool._idle_probe = counting
        conn = await pool.acquire()
        await pool.release(conn)
        assert len(probed) == 1 and conn.rollbacks == 1
        async with pool.connection() as conn:
            pass
        assert len(probed) == 2 and conn.commits == 1


@patches_the_core
async def test_a_checkout_off_the_fast_path_asks_for_validation_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """leak_timeout sends every checkout off the fast path: one the core
    served from the idle stack (not due, by its test) is not asked again;
    one that waited is asked once, not again by the validation."""
    asked: list[object] = []
    needs_validation = PoolState.needs_validation

    def counting(self: PoolState, entry: object, now: float) -> bool:
        asked.append(entry)
        return needs_validation(self, entry, now)  # type: ignore[arg-type]

    monkeypatch.setattr(PoolState, "needs_validation", counting)
    factory = Factory()
    async with AsyncPool(factory, min_size=1, max_size=1, leak_timeout=60) as pool:
        await pool.open(wait=True)
        for _ in range(3):
            async with pool.connection():
                pass
        assert asked == []
    async with AsyncPool(factory, min_size=1, max_size=1, validate="always") as pool:
        await pool.open(wait=True)
        asked.clear()
        async with pool.connection():
            pass
        # Once as the core lends it (_hold_if_due), once by the shell.
        assert len(asked) == 2
        assert pool.stats().validations == 1


async def test_wait_time_counts_every_checkout_zero_waits_included() -> None:
    factory = Factory()
    async with AsyncPool(factory, min_size=1, max_size=1) as pool:
        await pool.open(wait=True)
        for _ in range(3):  # served at once: fast path
            async with pool.connection():
                pass
        held = await pool.acquire()

        async def queued() -> None:
            async with pool.connection(timeout=1.0):
                pass

        waiter = aspawn(queued)
        await asleep(0.05)
        await pool.release(held)
        await ajoin([waiter], 2.0)
        stats = pool.stats()
    assert stats.acquires == 5
    assert stats.wait_time.count == 5
    assert stats.wait_time.p50 == 0.0 and stats.wait_time.max >= 0.04


def test_pool_events_are_hashable() -> None:
    from poolkeeper import PoolEvent

    first = PoolEvent("checkout", "p", None, 0.0)
    second = PoolEvent("checkout", "p", None, 0.0)
    assert len({first, second, first}) == 2
    assert {first: 1}[first] == 1
