"""The core's side of failover inside one pool: hosts, suspicion, role checks.

Pure tests, explicit instants: a pool whose connections went to two servers
(the shell records each new connection's host and role, see ``_hoststate``).
"""

from __future__ import annotations

import math

import pytest

from poolkeeper._config import PoolConfig
from poolkeeper._core.entry import PoolEntry
from poolkeeper._core.state import SUSPECT_GRACE, PoolState
from poolkeeper._hoststate import HostTable
from poolkeeper.drivers._hosts import HostInfo, is_failover_error
from poolkeeper.errors import ConfigError
from tests.unit.core.test_state import NO_LOCK, Conn

A = HostInfo("10.0.0.1", 5432, "primary")
B = HostInfo("10.0.0.2", 5432, "standby")


def two_host_state(
    role_check_interval: float | None = None,
) -> tuple[PoolState, list[PoolEntry]]:
    """A pool of 3: two connections to A (a1, a2), then one to B (b1, on top)."""
    config = PoolConfig(
        min_size=3,
        max_size=3,
        max_connecting=3,
        max_lifetime=None,
        role_check_interval=role_check_interval,
    )
    state = PoolState(config, "test", rand=lambda: 0.5)
    state.hosts = HostTable()
    state.want_role = "read-write"
    state.validate_window = 600.0
    assert state.plan_connects(0.0) == 3
    for n, info in enumerate((A, A, B)):
        state.connected(Conn(n), 0.0, 0.001, info)
    return state, list(state.idle)


def test_each_connection_knows_its_host_and_stats_count_per_host() -> None:
    state, (a1, a2, b1) = two_host_state()
    assert a1.host is not None and a1.host is a2.host and a1.host is not b1.host
    assert a1.host.role == "primary"
    assert state.stats().connections_by_host == {
        "10.0.0.1:5432": 2,
        "10.0.0.2:5432": 1,
    }


def test_a_suspect_host_sends_only_its_connections_to_a_role_check() -> None:
    state, (a1, a2, b1) = two_host_state()
    state.suspect_host(a1, 5.0)
    # Steady state is off: the fast path declines every connection checked
    # before the suspicion, whatever its host...
    assert state.acquire(5.1, NO_LOCK) is None
    # ...the full checkout tells them apart: B's connection needs nothing and
    # is cleared, so its next checkout takes the fast path again.
    entry = state.checkout(5.1)
    assert entry is b1 and not entry.unconfirmed
    assert not state.needs_role_check(b1)
    state.checkin(b1, 5.2)
    assert state.acquire(5.3, NO_LOCK) is b1
    state.release(b1, 5.4, NO_LOCK)
    # A's connections must have their role read (a validation) before use.
    assert state.needs_role_check(a2) and state.needs_role_check(a1)
    assert state.needs_validation(a2, 5.5)
    # Connections opened after the suspicion are not suspect.
    state.resize(None, 4)
    state.plan_connects(6.0)
    state.connected(Conn(9), 6.0, 0.001, A)
    assert not state.needs_role_check(state.idle[-1])


def test_role_checks_need_no_ping_policy() -> None:
    # validate="never" (no window): a suspect host's connections are still
    # checked, and nothing else is.
    state, (a1, _, b1) = two_host_state()
    state.validate_window = None
    state.suspect_host(a1, 5.0)
    assert state.needs_validation(a1, 5.1)
    assert not state.needs_validation(b1, 5.1)


def test_a_role_change_retires_the_connection_without_general_suspicion() -> None:
    state, (a1, a2, b1) = two_host_state()
    state.suspect_host(a1, 5.0)
    entry = state.checkout(5.1)
    assert entry is b1
    state.checkin(b1, 5.1)
    # The shell read a2's role: read-only now, not what read-write needs.
    state.in_use[a2.key] = a2
    state.idle.remove(a2)
    state.discard_checked_out(a2, "role_changed", 5.2)
    assert state.closed_by_reason["role_changed"] == 1
    assert state.take_retired() == [a2]
    assert state.suspect_before == -math.inf  # the server did not go away
    assert state.stats().connections_by_host == {
        "10.0.0.1:5432": 1,
        "10.0.0.2:5432": 1,
    }


def test_a_broken_connection_makes_its_host_suspect_and_pings_the_rest() -> None:
    state, (a1, _, b1) = two_host_state()
    entry = state.checkout(1.0)
    assert entry is b1
    state.checkin(b1, 2.0, discard=True)  # broken
    assert b1.host is None  # forgotten: no longer counted on its host
    assert state.suspect_before == 2.0
    # Its host's other connections (none left) would get a role check; the
    # others are pinged for the usual grace window.
    assert not state.needs_role_check(a1)
    assert state.needs_validation(a1, 2.0 + SUSPECT_GRACE / 2)
    assert state.acquire(2.0 + SUSPECT_GRACE / 2, NO_LOCK) is None


def test_role_check_interval_makes_every_host_suspect_each_round() -> None:
    state, (a1, a2, b1) = two_host_state(role_check_interval=5.0)
    state.next_role_round = 5.0
    state.housekeep(4.0)
    assert not any(state.needs_role_check(e) for e in (a1, a2, b1))
    assert state.acquire(4.0, NO_LOCK) is b1
    state.release(b1, 4.5, NO_LOCK)
    state.housekeep(5.0)
    assert all(state.needs_role_check(e) for e in (a1, a2, b1))
    assert state.next_role_round == 10.0
    assert state.housekeeping_interval() <= 5.0 / 4


@pytest.mark.parametrize("bad", [0, -1.0, "5", math.inf, True])
def test_role_check_interval_is_validated(bad: object) -> None:
    with pytest.raises(ConfigError, match="role_check_interval"):
        PoolConfig(role_check_interval=bad)  # type: ignore[arg-type]


class _Error(Exception):
    def __init__(self, sqlstate: str | None = None, pgcode: str | None = None) -> None:
        super().__init__("x")
        self.sqlstate = sqlstate
        self.pgcode = pgcode


@pytest.mark.parametrize(
    ("error", "seen"),
    [
        (_Error(sqlstate="25006"), True),  # psycopg, asyncpg: read-only
        (_Error(pgcode="57P01"), True),  # psycopg2, aiopg: admin shutdown
        (_Error(sqlstate="57P02"), True),
        (_Error(sqlstate="57P03"), True),
        (_Error(sqlstate="23505"), False),  # unique violation: the app's
        (ValueError("x"), False),
        (None, False),
    ],
)
def test_failover_sqlstates(error: BaseException | None, seen: bool) -> None:
    assert is_failover_error(error) is seen


def test_failover_sqlstate_seen_through_a_wrapper() -> None:
    wrapper = RuntimeError("wrapped")
    wrapper.__cause__ = _Error(sqlstate="25006")
    assert is_failover_error(wrapper)


@pytest.mark.parametrize("found_by", ["checkout", "keepalive"])
def test_a_role_change_found_on_one_connection_suspects_its_host(
    found_by: str,
) -> None:
    """A connection retired for ``role_changed`` (its role query at checkout,
    or a keepalive's) makes its host suspect: its siblings on that server
    have their role read before they are lent; the other host's do not."""
    state, (a1, a2, b1) = two_host_state()
    if found_by == "checkout":
        entry = state.checkout(5.0)
        while entry is not a2:  # take b1 out of the way
            other, entry = entry, state.checkout(5.0)
            assert other is not None
            state.checkin(other, 5.0)
        assert entry is a2
        state.discard_checked_out(a2, "role_changed", 5.1)
    else:
        state.in_use[id(a2.conn)] = a2  # lent to the pool for its ping
        state.idle.remove(a2)
        state.give_back(a2, 5.1, ok=False, reason="role_changed")
    assert state.closed_by_reason["role_changed"] == 1
    assert state.needs_role_check(a1)
    assert not state.needs_role_check(b1)
