"""The query watchdog in the sans-I/O core: which checkouts are stuck, and what then.

Explicit instants, no threads, no driver: the shell's probes (``busy``,
``quiet``) are passed in as values.
"""

from __future__ import annotations

import math

import pytest

from poolkeeper._config import PoolConfig
from poolkeeper._core.entry import PoolEntry
from poolkeeper._core.policy import query_stalled_for
from poolkeeper._core.state import PoolState


class Conn:
    def __init__(self, n: int) -> None:
        self.n = n


class _NoLock:
    def acquire(self) -> bool:
        return True

    def release(self) -> None:
        pass


def make_state(**kwargs: object) -> PoolState:
    return PoolState(PoolConfig(**kwargs), "qt", rand=lambda: 0.5)  # type: ignore[arg-type]


def checked_out(state: PoolState, now: float = 0.0) -> PoolEntry:
    """Open one connection and lend it to a caller at ``now``."""
    for _ in range(state.plan_connects(now)):
        state.connected(Conn(state.created), now, 0.001)
    entry = state.checkout(now)
    assert entry is not None
    return entry


# -- the rule ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("busy", "quiet", "busy_since", "held", "stalled"),
    [
        # Not busy: never stuck, however long held or quiet.
        (False, 100.0, None, 100.0, 0.0),
        # Busy, quiet time known: the quiet time (back-to-back short commands
        # keep it near zero, however long the connection has been busy).
        (True, 0.01, 0.0, 50.0, 0.01),
        (True, 3.0, 9.0, 10.0, 3.0),
        # Busy, quiet unknown (Unix socket): time since first seen busy.
        (True, None, 7.5, 10.0, 2.5),
        (True, None, None, 10.0, 0.0),
        # Unknown: time since checkout, or the quiet time if shorter.
        (None, None, None, 4.0, 4.0),
        (None, 0.5, None, 4.0, 0.5),
        (None, 9.0, None, 4.0, 4.0),
    ],
)
def test_stalled_for(
    busy: bool | None,
    quiet: float | None,
    busy_since: float | None,
    held: float,
    stalled: float,
) -> None:
    got = query_stalled_for(
        busy=busy, quiet=quiet, busy_since=busy_since, held=held, now=10.0
    )
    assert got == pytest.approx(stalled)


# -- the state ----------------------------------------------------------------------


def test_off_by_default() -> None:
    state = make_state(min_size=1)
    checked_out(state)
    assert state.query_suspects(100.0) == []


def test_suspects_are_lent_connections_with_their_lend_instant() -> None:
    state = make_state(min_size=2, query_timeout=1.0)
    entry = checked_out(state, now=3.0)
    assert state.query_suspects(3.5) == [(entry, 3.0)]
    # Idle connections are not suspects.
    assert len(state.idle) == 1


def test_stuck_command_is_marked_counted_and_retired_on_return() -> None:
    state = make_state(min_size=1, query_timeout=1.0)
    entry = checked_out(state, now=0.0)
    # Busy but only 0.5 s quiet: not yet.
    assert state.judge_query(entry, 0.0, True, 0.5, 2.0) is None
    assert state.query_timeouts == 0
    stalled = state.judge_query(entry, 0.0, True, 1.2, 2.7)
    assert stalled == pytest.approx(1.2)
    assert entry.aborted and state.query_timeouts == 1
    # Judged once: no longer a suspect, never counted twice.
    assert state.query_suspects(3.0) == []
    assert state.judge_query(entry, 0.0, True, 5.0, 6.0) is None
    assert state.query_timeouts == 1
    # The fast release path hands it to checkin(), which retires it.
    assert state.release(entry, 3.0, _NoLock()) is None
    assert state.take_retired() == [entry]
    assert entry.close_reason == "query_timeout"
    stats = state.stats()
    assert stats.query_timeouts == 1 and stats.closed_by_reason["query_timeout"] == 1
    assert stats.in_use == 0 and stats.size == 0
    # A replacement is planned, and older idle connections become suspect.
    assert state.plan_connects(3.0) == 1
    assert state.suspect_before == 3.0


def test_aborted_connection_is_never_handed_to_a_waiter() -> None:
    state = make_state(min_size=1, max_size=1, query_timeout=1.0)
    entry = checked_out(state)
    assert state.judge_query(entry, 0.0, None, None, 1.5) is not None
    from poolkeeper._core.entry import Waiter

    waiter = Waiter(signal=None, enqueued_at=1.6)
    state.enqueue(waiter)
    assert state.checkin(entry, 2.0, discard=True) is None
    assert waiter.entry is None
    assert entry.close_reason == "query_timeout"
    assert state.plan_connects(2.0) == 1


def test_idle_holder_is_not_stuck_when_the_driver_says_not_busy() -> None:
    state = make_state(min_size=1, query_timeout=1.0)
    entry = checked_out(state)
    for now in (1.0, 5.0, 50.0):
        assert state.judge_query(entry, 0.0, False, now, now) is None
    assert not entry.aborted and state.query_timeouts == 0


def test_busy_sampling_without_a_quiet_time() -> None:
    state = make_state(min_size=1, query_timeout=1.0)
    entry = checked_out(state)
    assert state.judge_query(entry, 0.0, True, None, 2.0) is None  # first seen
    assert state.judge_query(entry, 0.0, True, None, 2.5) is None
    # A sample that finds no command in progress starts the count again.
    assert state.judge_query(entry, 0.0, False, None, 2.75) is None
    assert state.judge_query(entry, 0.0, True, None, 3.0) is None
    assert state.judge_query(entry, 0.0, True, None, 3.9) is None
    assert state.judge_query(entry, 0.0, True, None, 4.0) == pytest.approx(1.0)


def test_busy_since_of_an_earlier_checkout_is_forgotten() -> None:
    state = make_state(min_size=1, query_timeout=1.0)
    entry = checked_out(state)
    assert state.judge_query(entry, 0.0, True, None, 0.5) is None
    state.release(entry, 0.6, _NoLock())
    again = state.checkout(5.0)
    assert again is entry
    assert state.judge_query(entry, 5.0, True, None, 5.5) is None
    assert not entry.aborted


def test_a_verdict_on_a_returned_or_relent_connection_changes_nothing() -> None:
    state = make_state(min_size=1, query_timeout=1.0)
    entry = checked_out(state)
    assert state.query_suspects(2.0) == [(entry, 0.0)]
    state.release(entry, 2.0, _NoLock())
    assert state.judge_query(entry, 0.0, None, None, 2.1) is None
    state.checkout(2.2)
    assert state.judge_query(entry, 0.0, None, None, 3.0) is None  # lent again
    assert not entry.aborted and state.query_timeouts == 0
    assert state.judge_query(entry, 2.2, None, None, 3.3) is not None


def test_pings_by_the_pool_itself_are_watched_from_when_they_were_lent() -> None:
    state = make_state(min_size=2, query_timeout=1.0, keepalive=1.0)
    for _ in range(state.plan_connects(0.0)):
        state.connected(Conn(state.created), 0.0, 0.001)
    due, _ = state.housekeep(5.0)
    assert len(due) == 2 and all(e.checked_out_at == math.inf for e in due)
    suspects = state.query_suspects(5.5)
    assert sorted(at for _, at in suspects) == [5.0, 5.0]
    assert state.judge_query(due[0], 5.0, None, None, 5.5) is None
    assert state.judge_query(due[0], 5.0, None, None, 6.1) is not None
    # A failed (aborted) ping retires it as a query timeout, not a failed check.
    assert state.give_back(due[0], 6.2, ok=False) is None
    assert due[0].close_reason == "query_timeout"
    state.give_back(due[1], 6.3, ok=True)
    assert state.take_idle(now=7.0) == [due[1]]
    assert [at for _, at in state.query_suspects(7.0)] == [7.0]


def test_failed_validation_of_an_aborted_checkout_counts_as_query_timeout() -> None:
    state = make_state(min_size=1, query_timeout=1.0)
    entry = checked_out(state)
    assert state.judge_query(entry, 0.0, True, 2.0, 2.0) is not None
    state.discard_checked_out(entry, "check", 2.1)
    assert entry.close_reason == "query_timeout"


@pytest.mark.parametrize(
    ("kwargs", "interval"),
    [
        ({}, 5.0),
        ({"query_timeout": 1.0}, 0.25),
        ({"query_timeout": 0.2}, 0.05),
        ({"query_timeout": 30.0}, 0.25),
        ({"query_timeout": 0.001}, 0.01),
        ({"query_timeout": 30.0, "leak_timeout": 0.4}, 0.1),
    ],
)
def test_housekeeping_runs_often_enough_for_the_watchdog(
    kwargs: dict[str, float], interval: float
) -> None:
    state = make_state(max_lifetime=None, max_idle=None, **kwargs)
    assert state.housekeeping_interval() == pytest.approx(interval)
