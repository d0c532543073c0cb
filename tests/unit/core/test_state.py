"""Pure tests of the sans-I/O core: no threads, no event loop, explicit instants."""

from __future__ import annotations

import itertools
import math
import random

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from poolkeeper._config import PoolConfig
from poolkeeper._core.connect_errors import ConnectFault
from poolkeeper._core.entry import PoolEntry, Waiter
from poolkeeper._core.policy import backoff_delay, expiry
from poolkeeper._core.state import SUSPECT_GRACE, PoolState
from poolkeeper.errors import (
    ConfigError,
    PoolClosed,
    PoolError,
    PoolTimeout,
    TooManyWaiters,
)


class Conn:
    """A stand-in driver connection: only its identity matters to the core."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __repr__(self) -> str:
        return f"Conn({self.n})"


#: The fast paths take the shell's lock themselves; here nothing runs concurrently.
class _NoLock:
    """The lock protocol of PoolState's fast paths, without locking."""

    def acquire(self) -> bool:
        return True

    def release(self) -> None:
        pass


NO_LOCK = _NoLock()


def make_state(**kwargs: object) -> PoolState:
    return PoolState(PoolConfig(**kwargs), "test", rand=lambda: 0.5)  # type: ignore[arg-type]


def fill(state: PoolState, now: float = 0.0) -> list[Conn]:
    """Run every planned connect to completion; return the new connections."""
    conns: list[Conn] = []
    n = state.plan_connects(now)
    for i in range(n):
        conn = Conn(len(conns) + i)
        state.connected(conn, now, 0.001)
        conns.append(conn)
    return conns


def test_plan_fills_to_min_size_within_max_connecting() -> None:
    state = make_state(min_size=5, max_size=10, max_connecting=2)
    assert state.plan_connects(0.0) == 2
    assert state.plan_connects(0.0) == 0  # two already in flight
    state.connected(Conn(1), 0.0, 0.01)
    assert state.plan_connects(0.0) == 1
    assert state.size == 1 and state.connecting == 2


def test_checkout_is_lifo_and_checkin_returns_to_idle() -> None:
    state = make_state(min_size=2, max_size=2)
    a, b = fill(state)
    entry = state.checkout(1.0)
    assert entry is not None and entry.conn is b  # most recently added first
    assert state.checkin(entry, 2.0) is None
    assert [e.conn for e in state.idle] == [a, b]
    assert state.acquires == 1 and state.usage_time.count == 1


def two_waiters_on_one_connection(
    **kwargs: object,
) -> tuple[PoolState, PoolEntry, Waiter, Waiter]:
    """A pool of one connection, lent, and two callers queued for it."""
    state = make_state(min_size=1, max_size=1, **kwargs)
    fill(state)
    entry = state.checkout(0.0)
    assert entry is not None
    first, second = Waiter(None, 1.0), Waiter(None, 2.0)
    state.enqueue(first)
    state.enqueue(second)
    return state, entry, first, second


def test_checkin_hands_to_oldest_waiter_first() -> None:
    state, entry, first, second = two_waiters_on_one_connection()
    woken = state.checkin(entry, 3.0)
    assert woken is first and first.entry is entry and second.entry is None
    assert list(state.waiters) == [second]
    assert state.in_use[id(entry.conn)] is entry


def test_bounded_mode_lets_a_running_caller_overtake_each_waiter_once() -> None:
    state, entry, first, second = two_waiters_on_one_connection(fair="bounded")
    # The return only nudges the oldest waiter: the connection stays idle,
    # and a caller that runs before the waiter does takes it.
    nudged = state.checkin(entry, 3.0)
    assert nudged is first and first.entry is None
    barger = state.acquire(3.0, NO_LOCK)
    assert barger is entry
    # The nudged waiter finds nothing and goes back to the head of the queue.
    assert state.checkout_for(first, 3.5) is None
    state.requeue(first)
    assert list(state.waiters) == [first, second] and first.overtaken
    # Once overtaken, the next return goes to it directly: no second barge.
    woken = state.release(barger, 4.0, NO_LOCK)
    assert woken is first
    assert woken.entry is entry
    assert state.acquire(4.0, NO_LOCK) is None and state.checkout(4.0) is None
    assert list(state.waiters) == [second] and not second.overtaken


@pytest.mark.parametrize("fair", [False, "bounded"])
def test_requeued_waiters_keep_their_order(fair: object) -> None:
    # Two connections come back to three waiters: the two oldest are nudged,
    # two running callers take both connections, and both nudged waiters
    # find nothing, the older one first. The queue keeps W1, W2, W3.
    state = make_state(min_size=2, max_size=2, fair=fair)
    fill(state)
    lent = [state.checkout(0.0), state.checkout(0.0)]
    waiters = [Waiter(None, float(i)) for i in (1, 2, 3)]
    for waiter in waiters:
        state.enqueue(waiter)
    nudged = [state.checkin(entry, 4.0) for entry in lent if entry is not None]
    assert nudged == waiters[:2]
    bargers = [state.acquire(4.0, NO_LOCK), state.acquire(4.0, NO_LOCK)]
    assert None not in bargers
    for found in nudged:
        assert found is not None
        assert state.checkout_for(found, 4.5) is None
        state.requeue(found)
    assert list(state.waiters) == waiters
    # And the other way round (the younger finds nothing first).
    state.waiters.clear()
    for waiter in waiters:
        waiter.overtaken = False
        state.enqueue(waiter)
    for waiter in reversed(waiters[:2]):
        state.waiters.remove(waiter)
        state.requeue(waiter)
    assert list(state.waiters) == waiters


@pytest.mark.parametrize("fair", [True, False, "bounded"])
def test_a_nudge_of_a_waiter_that_leaves_passes_on_outside_fair_mode(
    fair: object,
) -> None:
    state, entry, first, second = two_waiters_on_one_connection(fair=fair)
    woken = state.checkin(entry, 3.0)
    assert woken is first
    if fair is True:
        assert first.entry is entry and not state.idle
        assert state.next_to_nudge() is None
    else:
        # The nudged waiter gave up before it ran: the next one is nudged.
        assert first.entry is None and list(state.idle) == [entry]
        assert state.next_to_nudge() is second
        assert state.checkout_for(second, 3.5) is entry


@pytest.mark.parametrize("fair", [1, "yes", None, "Bounded"])
def test_fair_must_be_a_bool_or_bounded(fair: object) -> None:
    with pytest.raises(ConfigError, match="fair must be True, False or 'bounded'"):
        make_state(fair=fair)


def test_double_checkin_raises() -> None:
    state = make_state()
    fill(state)
    entry = state.checkout(0.0)
    assert entry is not None
    state.checkin(entry, 0.0)
    with pytest.raises(PoolError, match="not checked out"):
        state.checkin(entry, 0.0)


def test_max_waiting_rejects_and_counts() -> None:
    state = make_state(max_waiting=1)
    state.enqueue(Waiter(None, 0.0))
    with pytest.raises(TooManyWaiters) as info:
        state.enqueue(Waiter(None, 0.0))
    assert info.value.waiting == 1 and state.rejections == 1


def test_lifetime_retires_on_checkout_and_checkin() -> None:
    state = make_state(min_size=1, max_size=2, max_lifetime=10.0, lifetime_jitter=0.1)
    (conn,) = fill(state)
    # rand() is 0.5, so the lifetime is 10 * (1 - 0.1 * 0.5) = 9.5 s.
    assert state.idle[0].expires_at == pytest.approx(9.5)
    assert state.checkout(9.6) is None
    assert [e.conn for e in state.take_retired()] == [conn]
    assert state.closed_by_reason["lifetime"] == 1


def test_max_uses_retires_on_checkin() -> None:
    state = make_state(max_uses=2)
    fill(state)
    for _ in range(2):
        entry = state.checkout(0.0)
        assert entry is not None
        state.checkin(entry, 0.0)
    assert state.size == 0 and state.closed_by_reason["uses"] == 1


def test_a_hand_off_counts_when_taken_and_not_when_recalled() -> None:
    state = make_state(min_size=1, max_size=1, max_uses=2)
    (conn,) = fill(state)
    entry = state.checkout(1.0)
    assert entry is not None and entry.uses == 1 and state.acquires == 1
    cancelled, taker = Waiter(None, 2.0), Waiter(None, 3.0)
    state.enqueue(cancelled)
    state.enqueue(taker)
    assert state.checkin(entry, 4.0) is cancelled and cancelled.entry is entry
    # Reserved for `cancelled`, but not counted until it takes it.
    assert state.in_use[entry.key] is entry
    assert entry.uses == 1 and state.acquires == 1
    # `cancelled` stops waiting before it takes the connection: the next
    # waiter gets it as if the first hand-off had never happened.
    assert state.abandon(cancelled, timed_out=False) is entry
    assert state.recall(entry, 5.0) is taker and taker.entry is entry
    assert entry.uses == 1 and state.acquires == 1 and state.wait_time.count == 0
    assert entry.last_used_at == 4.0 and state.usage_time.count == 1
    assert state.abandon(taker, timed_out=True) is entry  # lost the race
    state.served(taker, 6.0)
    assert entry.uses == 2 and state.acquires == 2 and state.timeouts == 0
    state.obtained(6.0 - taker.enqueued_at)  # the shell records the wait
    assert state.wait_time.count == 1 and state.wait_time.max == 3.0
    # That was its second use, so it retires when it comes back.
    state.checkin(entry, 7.0)
    assert state.closed_by_reason["uses"] == 1 and state.size == 0
    assert [e.conn for e in state.take_retired()] == [conn]
    with pytest.raises(PoolError, match="not checked out"):
        state.recall(entry, 8.0)


def test_a_hand_off_recalled_after_close_retires() -> None:
    state = make_state(min_size=1, max_size=1)
    fill(state)
    entry = state.checkout(0.0)
    assert entry is not None
    waiter = Waiter(None, 1.0)
    state.enqueue(waiter)
    assert state.checkin(entry, 2.0) is waiter
    assert state.close() == []  # the waiter already owns a connection
    assert state.abandon(waiter, timed_out=False) is entry
    assert state.recall(entry, 3.0) is None
    assert state.closed_by_reason["close"] == 1 and state.acquires == 1


def test_discarded_connection_is_replaced() -> None:
    state = make_state(min_size=1, max_size=3)
    fill(state)
    entry = state.checkout(0.0)
    assert entry is not None
    state.checkin(entry, 0.0, discard=True)
    assert state.closed_by_reason["broken"] == 1
    assert state.plan_connects(0.0) == 1


def test_shed_retires_beyond_keep_idle_unless_callers_wait() -> None:
    state = make_state(min_size=2, max_size=3)
    fill(state)
    first, second = state.checkout(0.0), state.checkout(0.0)
    assert first is not None and second is not None
    # Nothing idle yet: the first one back is kept.
    assert state.shed(first, 1.0, keep_idle=1) is False
    state.checkin(first, 1.0)
    # One idle already: the next one back retires, without suspicion.
    assert state.shed(second, 2.0, keep_idle=1) is True
    assert second.close_reason == "idle" and state.closed_by_reason["idle"] == 1
    assert not state.retired  # its user closes it
    assert state.suspect_before == -math.inf
    assert state.size == 1 and not state.in_use
    # A waiting caller gets it instead.
    entry = state.checkout(3.0)
    assert entry is not None
    state.enqueue(Waiter(None, 3.0))
    assert state.shed(entry, 4.0, keep_idle=0) is False


def test_shed_of_a_closed_connection_always_retires() -> None:
    state = make_state(min_size=1, max_size=1)
    fill(state)
    entry = state.checkout(0.0)
    assert entry is not None
    state.enqueue(Waiter(None, 0.5))
    assert state.shed(entry, 1.0, keep_idle=None) is True
    assert state.closed_by_reason["broken"] == 1
    assert state.suspect_before == -math.inf
    assert state.plan_connects(1.0) == 1  # a replacement for the waiter
    with pytest.raises(PoolError, match="not checked out"):
        state.shed(entry, 1.0, keep_idle=None)


def test_housekeeping_shrinks_idle_above_min_size_only() -> None:
    state = make_state(min_size=1, max_size=3, max_idle=5.0)
    state.resize(3, None)
    fill(state)
    fill(state)
    assert state.size == 3
    state.resize(1, None)
    state.housekeep(4.0)
    assert state.size == 3
    state.housekeep(6.0)
    assert state.size == 1 and state.closed_by_reason["idle"] == 2


def test_backoff_single_retrier_and_growth() -> None:
    state = make_state(min_size=2, max_size=4, reconnect_min=0.1, reconnect_max=1.0)
    assert state.plan_connects(0.0) == 2
    err = OSError("refused")
    assert state.connect_failed(err, 0.0) is False  # the other worker retries
    assert state.connect_failed(err, 0.0) is True
    assert state.connecting == 1 and state.last_connect_error is err
    assert state.plan_connects(0.0) == 0  # one retrier only while failing
    assert state.connect_delay(0.0) > 0
    state.connected(Conn(1), 1.0, 0.01)
    assert state.connect_failures == 0
    # Regression (S5): a stale connect error no longer explains later timeouts.
    error: BaseException | None = state.last_connect_error
    assert error is None
    assert state.plan_connects(1.0) == 1


def test_backoff_delay_bounds() -> None:
    assert backoff_delay(0, 0.05, 5.0, lambda: 1.0) == 0.0
    assert backoff_delay(1, 0.05, 5.0, lambda: 1.0) == pytest.approx(0.05)
    assert backoff_delay(4, 0.05, 5.0, lambda: 1.0) == pytest.approx(0.4)
    assert backoff_delay(100, 0.05, 5.0, lambda: 1.0) == pytest.approx(5.0)
    assert backoff_delay(100, 0.05, 5.0, lambda: 0.0) == pytest.approx(4.0)
    assert backoff_delay(1, 0.05, 5.0, lambda: 0.0) == pytest.approx(0.05)
    assert backoff_delay(3, 0.05, 5.0, lambda: 0.0) == pytest.approx(0.16)
    assert expiry(0.0, None, 0.05, lambda: 1.0) == math.inf


def test_backoff_retry_rate_is_bounded_once_capped() -> None:
    """Regression (S5): full jitter retried after only ``reconnect_min`` at times,
    even once capped, so an outage saw ~11 attempts in 5 s with a 1.5 s cap."""
    rng = random.Random(5)
    for _ in range(200):
        at, attempts, failures = 0.0, 1, 1
        delays = []
        while True:
            delay = backoff_delay(failures, 0.05, 1.5, rng.random)
            delays.append(delay)
            at += delay
            if at >= 5.0:
                break
            attempts += 1
            failures += 1
        assert attempts <= 8, delays
        assert all(d >= 0.8 * 1.5 for d in delays[6:])  # capped: never fast again
        # Never shorter than the previous ceiling allowed: no falling back.
        assert all(b >= 0.8 * a for a, b in itertools.pairwise(delays))


def test_close_fails_waiters_and_retires_idle() -> None:
    state = make_state(min_size=1)
    fill(state)
    waiter = Waiter(None, 0.0)
    state.enqueue(waiter)
    assert state.close() == [waiter]
    assert isinstance(waiter.error, PoolClosed)
    assert state.size == 0 and len(state.take_retired()) == 1
    with pytest.raises(PoolClosed):
        state.enqueue(Waiter(None, 0.0))


def test_resize_validates() -> None:
    state = make_state(min_size=1, max_size=4)
    with pytest.raises(ConfigError, match="min_size"):
        state.resize(5, None)


class CoreMachine(RuleBasedStateMachine):
    """Random acquire/release/timeout/connect/close/resize steps against the invariants.

    The machine plays every party: callers (holding, waiting, or handed a
    connection they have not taken yet, and perhaps never will: cancelled),
    connect workers (finishing or failing) and the clock.
    """

    def __init__(self) -> None:
        super().__init__()
        self.state = make_state(min_size=1, max_size=3, max_waiting=4, max_uses=5)
        self.now = 0.0
        self.held: list[PoolEntry] = []
        self.waiting: list[Waiter] = []
        self.handed: list[Waiter] = []  # handed a connection, not yet taken
        self.delivered = 0  # checkouts callers actually got
        self.served: list[Waiter] = []  # in the order the core handed entries out
        self.serial = 0
        self.in_flight = 0

    def _wake(self, waiter: Waiter | None) -> None:
        if waiter is not None and waiter.entry is not None:
            self.served.append(waiter)
            self.waiting.remove(waiter)
            self.handed.append(waiter)

    @rule()
    def acquire(self) -> None:
        entry = self.state.checkout(self.now)
        if entry is not None:
            self.held.append(entry)
            self.delivered += 1
            return
        waiter = Waiter(None, self.now)
        try:
            self.state.enqueue(waiter)
        except (TooManyWaiters, PoolClosed):
            return
        self.waiting.append(waiter)
        self.in_flight += self.state.plan_connects(self.now)

    @rule()
    def acquire_fast(self) -> None:
        entry = self.state.acquire(self.now, NO_LOCK)
        if entry is not None:
            self.held.append(entry)
            self.delivered += 1

    @precondition(lambda self: self.handed)
    @rule(index=st.integers(0, 10))
    def take(self, index: int) -> None:
        waiter = self.handed.pop(index % len(self.handed))
        self.state.served(waiter, self.now)
        assert waiter.entry is not None
        self.held.append(waiter.entry)
        self.delivered += 1

    @precondition(lambda self: self.handed)
    @rule(index=st.integers(0, 10))
    def cancel_handed(self, index: int) -> None:
        waiter = self.handed.pop(index % len(self.handed))
        entry = self.state.abandon(waiter, timed_out=False)
        assert entry is not None and entry is waiter.entry
        self._wake(self.state.recall(entry, self.now))
        self.in_flight += self.state.plan_connects(self.now)

    @precondition(lambda self: self.held)
    @rule(index=st.integers(0, 10))
    def release_fast(self, index: int) -> None:
        entry = self.held.pop(index % len(self.held))
        self._wake(self.state.release(entry, self.now, NO_LOCK))
        self.in_flight += self.state.plan_connects(self.now)

    @precondition(lambda self: self.held)
    @rule(index=st.integers(0, 10), broken=st.booleans())
    def release(self, index: int, broken: bool) -> None:
        entry = self.held.pop(index % len(self.held))
        self._wake(self.state.checkin(entry, self.now, discard=broken))
        self.in_flight += self.state.plan_connects(self.now)

    @precondition(lambda self: self.waiting)
    @rule(index=st.integers(0, 10))
    def timeout(self, index: int) -> None:
        waiter = self.waiting[index % len(self.waiting)]
        assert self.state.abandon(waiter, timed_out=True) is None
        self.waiting.remove(waiter)

    @precondition(lambda self: self.in_flight)
    @rule(ok=st.booleans())
    def finish_connect(self, ok: bool) -> None:
        if ok:
            self.serial += 1
            self.in_flight -= 1
            self._wake(self.state.connected(Conn(self.serial), self.now, 0.0))
        elif not self.state.connect_failed(OSError("down"), self.now):
            self.in_flight -= 1
        self.in_flight += self.state.plan_connects(self.now)

    @rule(seconds=st.floats(0.0, 700.0))
    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.state.housekeep(self.now)
        self.in_flight += self.state.plan_connects(self.now)

    @rule(min_size=st.integers(0, 3), max_size=st.integers(1, 4))
    def resize(self, min_size: int, max_size: int) -> None:
        if min_size <= max_size:
            self.state.resize(min_size, max_size)
            self.in_flight += self.state.plan_connects(self.now)

    @rule()
    def close(self) -> None:
        for waiter in self.state.close():
            assert isinstance(waiter.error, PoolClosed)
            self.waiting.remove(waiter)

    @invariant()
    def sizes_bounded(self) -> None:
        state = self.state
        assert state.connecting == self.in_flight
        # Above max_size only while callers hold more than a resize allows.
        assert state.size <= max(state.max_size, len(self.held) + len(self.handed))

    @invariant()
    def only_delivered_checkouts_count(self) -> None:
        assert self.state.acquires == self.delivered

    @invariant()
    def every_connection_in_one_place(self) -> None:
        state = self.state
        idle_ids = {id(e) for e in state.idle}
        held_ids = [id(e) for e in self.held] + [id(w.entry) for w in self.handed]
        assert len(held_ids) == len(set(held_ids)), "an entry is held twice"
        assert not idle_ids & set(held_ids), "an entry is both idle and held"
        assert {id(e) for e in state.in_use.values()} == set(held_ids)
        assert state.size == len(state.idle) + len(held_ids)

    @invariant()
    def waiters_in_fifo_order(self) -> None:
        queue = self.state.waiters
        # Both ends of the queue are waiting; any in between that stopped
        # waiting are counted, and left out of the count of waiters.
        assert not queue or (queue[0].queued and queue[-1].queued)
        queued = [w for w in queue if w.queued]
        assert len(queue) - len(queued) == self.state.abandoned
        assert self.state.waiting() == len(queued)
        assert queued == [w for w in self.waiting if w in queued]
        times = [w.enqueued_at for w in self.served]
        assert times == sorted(times), "a later waiter was served first"

    @invariant()
    def no_idle_while_waiting(self) -> None:
        if self.state.waiters:
            assert not self.state.idle


CoreMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=60, deadline=None
)
TestCoreMachine = CoreMachine.TestCase


def test_a_freeze_makes_every_idle_connection_suspect() -> None:
    state = make_state(min_size=2, max_size=2, max_idle=8.0, max_lifetime=None)
    state.validate_window = 600.0  # pings only for suspects in this test
    fill(state)
    interval = state.housekeeping_interval()  # 2 s here
    state.housekeep(10.0)
    state.housekeep(10.0 + interval)
    entry = state.checkout(10.0 + interval)
    assert entry is not None and not state.needs_validation(entry, 10.0 + interval)
    state.checkin(entry, 10.0 + interval)
    # The process was stopped (laptop sleep, SIGSTOP, a frozen Lambda) for an hour.
    thawed = 10.0 + interval + 3600.0
    state.housekeep(thawed)
    assert all(state.needs_validation(e, thawed) for e in state.idle)


def test_permanent_connect_error_fails_waiters_of_an_empty_pool() -> None:
    class BadPassword(Exception):
        sqlstate = "28P01"

    state = make_state(min_size=0)
    waiter = Waiter(None, 0.0)
    state.enqueue(waiter)
    assert state.plan_connects(0.0) == 1
    error = BadPassword("password authentication failed")
    state.connect_failed(error, 0.1, ConnectFault.AUTH)
    assert state.failed_waiters == [waiter] and not state.waiters
    # The driver's own error (a copy per caller), chained to the original.
    assert isinstance(waiter.error, BadPassword) and waiter.error is not error
    assert waiter.error.__cause__ is error
    # A transient error keeps callers waiting (they time out on their own).
    state.failed_waiters.clear()
    other = Waiter(None, 1.0)
    state.enqueue(other)
    state.connect_failed(ConnectionResetError("reset"), 1.0, ConnectFault.TRANSIENT)
    assert list(state.waiters) == [other] and not state.failed_waiters


def test_refusal_is_permanent_only_until_the_first_connect() -> None:
    state = make_state(min_size=0, max_size=2)
    first = Waiter(None, 0.0)
    state.enqueue(first)
    state.plan_connects(0.0)
    state.connect_failed(ConnectionRefusedError("refused"), 0.1, ConnectFault.REFUSED)
    assert isinstance(first.error, ConnectionRefusedError)
    # Connected once: a later refusal (a restart) makes callers wait.
    state.plan_connects(10.0)
    state.connected(object(), 10.0, 0.01)
    entry = state.checkout(10.0)
    assert entry is not None
    state.checkin(entry, 10.0, discard=True)
    waiter = Waiter(None, 11.0)
    state.enqueue(waiter)
    state.plan_connects(11.0)
    state.connect_failed(ConnectionRefusedError("refused"), 11.0, ConnectFault.REFUSED)
    assert waiter.error is None and list(state.waiters) == [waiter]
    assert "last connect error: ConnectionRefusedError: refused" in str(
        state.timeout_error(5.0)
    )


def test_new_callers_fail_fast_only_while_backing_off_from_a_permanent_error() -> None:
    state = make_state(min_size=0, reconnect_min=1.0, reconnect_max=1.0)
    state.enqueue(Waiter(None, 0.0))
    state.plan_connects(0.0)
    state.connect_failed(OSError("unknown database"), 0.0, ConnectFault.DATABASE)
    with pytest.raises(OSError, match="unknown database"):
        state.enqueue(Waiter(None, 0.5))  # next attempt at 0.8-1.0
    late = Waiter(None, 1.5)
    state.enqueue(late)  # past the backoff: it may try again
    assert state.plan_connects(1.5) == 1


def test_connect_error_message_and_driver_error_mask_the_secrets() -> None:
    state = PoolState(PoolConfig(min_size=0), "test", secrets=("pk-s3cret",))
    waiter = Waiter(None, 0.0)
    state.enqueue(waiter)
    state.plan_connects(0.0)
    error = PermissionError(
        "password authentication failed (dsn: password=pk-s3cret, pk-s3cret)"
    )
    state.connect_failed(error, 0.1, ConnectFault.AUTH)
    assert "pk-s3cret" not in str(waiter.error)
    assert "password=***, ***" in str(waiter.error)
    assert "pk-s3cret" not in str(error)  # masked where it was raised, too
    assert "pk-s3cret" not in str(state.timeout_error(1.0))


def test_timeout_zero_waits_only_for_a_connect_started_for_it() -> None:
    state = make_state(min_size=0, max_size=1)
    waiter = Waiter(None, 0.0)
    state.enqueue(waiter)
    assert state.plan_connects(0.0) == 1
    assert state.wait_for_connect(waiter, 0.0) > 0 and waiter.connect_only
    # A second caller: no room left for a connect of its own.
    other = Waiter(None, 0.0)
    state.enqueue(other)
    assert state.plan_connects(0.0) == 0
    assert state.wait_for_connect(other, 0.0) == 0
    # A transient failure fails the connect-only waiter with a PoolTimeout.
    state.connect_failed(ConnectionResetError("reset"), 0.1, ConnectFault.TRANSIENT)
    assert isinstance(waiter.error, PoolTimeout)
    assert other.error is None


def test_suspicion_lasts_a_grace_window_after_a_broken_connection() -> None:
    state = make_state(min_size=2, max_size=2, max_lifetime=None)
    state.validate_window = 600.0  # pings only for suspects in this test
    fill(state)
    busy = state.checkout(1.0)
    assert busy is not None
    state.checkin(busy, 2.0, discard=True)  # found broken at t=2
    # A check right away clears nothing: the server may still be ending
    # the other sessions, so the idle one stays suspect for the window...
    (idle,) = state.take_idle(suspects_only=True)
    assert state.give_back(idle, 2.01, ok=True) is None
    assert state.needs_validation(idle, 2.02)
    assert state.take_idle(suspects_only=True) == [idle]
    # ...and a check after the window ends the suspicion.
    after = 2.0 + SUSPECT_GRACE + 0.01
    state.give_back(idle, after, ok=True)
    assert not state.needs_validation(idle, after)
    assert state.take_idle(suspects_only=True) == []


def test_fast_acquire_takes_only_a_connection_that_can_go_out_as_is() -> None:
    state = make_state(min_size=2, max_size=2, max_lifetime=100.0)
    state.validate_window = 0.5
    a, b = fill(state, now=0.0)
    # b (top of the stack) is due a validation ping: the fast path declines
    # and changes nothing.
    assert state.acquire(1.0, NO_LOCK) is None
    assert [e.conn for e in state.idle] == [a, b] and state.acquires == 0
    entry = state.acquire(0.1, NO_LOCK)
    assert entry is not None and entry.conn is b
    assert state.in_use == {id(b): entry} and state.acquires == 1
    assert entry.uses == 1 and entry.checked_out_at == 0.1
    assert state.release(entry, 0.3, NO_LOCK) is None
    assert [e.conn for e in state.idle] == [a, b]
    assert state.usage_time.count == 1 and state.usage_time.max == pytest.approx(0.2)
    assert entry.last_used_at == 0.3
    # Past its lifetime: declined too (the full checkout retires it).
    assert state.acquire(200.0, NO_LOCK) is None and not state.retired
    # Suspect after a broken sibling: declined.
    state.suspect_all(0.35)
    assert state.acquire(0.4, NO_LOCK) is None


def test_fast_release_falls_back_to_checkin_rules() -> None:
    state = make_state(min_size=1, max_size=1, max_uses=2)
    fill(state)
    stranger = PoolEntry(Conn(8), 0.0, math.inf)
    with pytest.raises(PoolError, match="released twice"):
        state.release(stranger, 1.0, NO_LOCK)
    entry = state.acquire(0.0, NO_LOCK)
    assert entry is not None
    assert state.release(entry, 1.0, NO_LOCK) is None
    assert list(state.idle) == [entry]
    entry = state.acquire(1.0, NO_LOCK)
    assert entry is not None and entry.uses == 2
    assert state.release(entry, 2.0, NO_LOCK) is None
    assert state.retired == [entry] and entry.close_reason == "uses"
    with pytest.raises(PoolError, match="released twice"):
        state.release(entry, 2.0, NO_LOCK)


def test_fast_release_retires_beyond_a_shrunk_max_size() -> None:
    state = make_state(min_size=0, max_size=3)
    held = []
    for i in range(3):
        state.connecting += 1
        state.connected(Conn(i), 0.0, 0.0)
        entry = state.checkout(0.0)
        assert entry is not None
        held.append(entry)
    state.resize(0, 1)
    assert state.size_limited
    assert state.release(held[0], 1.0, NO_LOCK) is None
    assert held[0].close_reason == "resize"
    assert state.release(held[1], 1.0, NO_LOCK) is None
    assert held[1].close_reason == "resize"
    # Back within max_size: the last one returns to the idle stack.
    assert state.release(held[2], 1.0, NO_LOCK) is None
    assert list(state.idle) == [held[2]] and not state.size_limited


def test_fast_release_hands_to_a_waiter() -> None:
    state = make_state(min_size=1, max_size=1)
    fill(state)
    entry = state.acquire(0.0, NO_LOCK)
    assert entry is not None
    waiter = Waiter(None, 0.5)
    state.enqueue(waiter)
    assert state.release(entry, 1.0, NO_LOCK) is waiter
    assert waiter.entry is entry and not state.idle


def test_fast_acquire_reads_the_idle_stack_under_the_lock() -> None:
    # Housekeeping replaces `state.idle` with a new deque under the lock. A
    # fast acquire that read the attribute before taking the lock would pop
    # from the stale deque: the connection would stay in the new idle stack
    # too, and a second caller could be lent the same connection.
    state = make_state(min_size=2, max_size=2)
    a, b = fill(state)

    class SwapOnAcquire:
        """A lock whose acquire() lets "housekeeping" run first."""

        def acquire(self) -> bool:
            # Drop b from the stack, as housekeeping does, in a new deque.
            state.idle = type(state.idle)(e for e in state.idle if e.conn is not b)
            return True

        def release(self) -> None:
            pass

    entry = state.acquire(0.0, SwapOnAcquire())
    assert entry is not None and entry.conn is a
    assert list(state.idle) == []
    assert list(state.in_use.values()) == [entry]


def test_reported_acquires_never_go_down_when_a_validation_fails() -> None:
    state = make_state(min_size=2, max_size=2)
    fill(state)
    first = state.checkout(0.0)
    assert first is not None
    assert state.stats().acquires == 1
    # Its validation fails: the checkout is withdrawn, the caller retries.
    state.discard_checked_out(first, "check", 0.1)
    assert state.stats().acquires == 1  # not 0: a counter never goes down
    second = state.checkout(0.2)
    assert second is not None
    assert state.stats().acquires == 1  # the retried checkout counts once
    state.checkin(second, 0.3)
    third = state.checkout(0.4)
    assert third is not None
    assert state.stats().acquires == 2


def test_reclaim_frees_the_slot_of_a_closed_or_dropped_connection() -> None:
    state = make_state(min_size=0, max_size=2)
    state.plan_connects(0.0)
    state.waiters.append(Waiter(None, 0.0))
    state.waiters.append(Waiter(None, 0.0))
    assert state.plan_connects(0.0) == 2
    state.connected(Conn(1), 0.0, 0.001)
    state.connected(Conn(2), 0.0, 0.001)
    closed, dropped = list(state.in_use.values())
    dropped.conn = None  # collected while its caller held it
    assert state.take_unreleased(closed, 1.0)
    assert state.take_unreleased(dropped, 1.0)
    assert not state.take_unreleased(closed, 1.0)  # only once
    assert state.in_use == {} and state.size == 0
    # The closed one still exists and is closed by the shell; the dropped one
    # is gone already. Both count as leaked.
    assert state.take_retired() == [closed]
    assert state.closed_by_reason["leaked"] == 2 and state.leaks == 2
    assert state.plan_connects(1.0) == 0  # nobody waits: min_size is 0
    state.waiters.append(Waiter(None, 1.0))
    assert state.plan_connects(1.0) == 1


def test_acquires_are_not_one_too_high_after_a_validation_gives_up() -> None:
    state = make_state(min_size=1, max_size=1, validate="always")
    state.validate_window = -math.inf
    fill(state)
    entry = state.checkout(1.0)  # due a validation: not reported yet
    assert entry is not None
    assert state.stats().acquires == 0  # a scrape while the ping runs
    # The ping overruns the caller's deadline: discarded, the caller times out.
    state.discard_checked_out(entry, "check", 2.0)
    state.validation_timed_out()
    stats = state.stats()
    assert stats.acquires == 0 and stats.timeouts == 1
    # A checkout that passes its validation counts once.
    fill(state, 3.0)
    entry = state.checkout(4.0)
    assert entry is not None
    state.validated(entry, 4.1)
    assert state.stats().acquires == 1


def test_a_connection_the_pool_is_pinging_counts_as_idle_not_in_use() -> None:
    # The pool's own pings (suspect checks, keepalives) lend nothing to a
    # caller: stats() must not report them as in use (a background suspect
    # check made `in_use` read 1 right after a caller's broken connection).
    state = make_state(min_size=2, max_size=2, max_lifetime=None, keepalive=1.0)
    fill(state)
    busy = state.checkout(1.0)
    assert busy is not None
    state.checkin(busy, 2.0, discard=True)
    (idle,) = state.take_idle(suspects_only=True)
    stats = state.stats()
    assert (stats.in_use, stats.idle, stats.size) == (0, 1, 1)
    state.give_back(idle, 2.5, ok=True)
    (due,) = state.housekeep(10.0)[0]
    assert due is idle
    stats = state.stats()
    assert (stats.in_use, stats.idle, stats.size) == (0, 1, 1)


def test_a_reclaimed_connection_is_no_longer_its_callers_to_report() -> None:
    # A release() interrupted while ending the transaction gave the connection
    # back: the shell's scan for unreleased acquire() connections (entries
    # with a call site) must not report it as leaked while it is recovered.
    state = make_state(min_size=1, max_size=1, max_lifetime=None)
    fill(state)
    entry = state.checkout(1.0)
    assert entry is not None
    entry.site = (object(), 0)  # lent by acquire(), as the shell records it
    state.reclaim(entry, 2.0)
    assert [e for e in state.in_use.values() if e.site is not None] == []
