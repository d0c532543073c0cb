"""Reconnect pacing: fast failures retried on a short interval while callers
wait, slow ones (and a full server) backed off, as docs/RELIABILITY.md says."""

from __future__ import annotations

import itertools

import pytest

from poolkeeper._config import PoolConfig
from poolkeeper._core.connect_errors import ConnectFault
from poolkeeper._core.entry import Waiter
from poolkeeper._core.policy import FAST_FAILURE, retry_delay
from poolkeeper._core.state import PoolState
from poolkeeper.errors import ConfigError

REFUSED = OSError("connection refused")


def make_state(**kwargs: object) -> PoolState:
    return PoolState(PoolConfig(**kwargs), "test", rand=lambda: 0.5)  # type: ignore[arg-type]


def ever_connected(state: PoolState) -> None:
    """The server was reached before: a refusal now is a restart, not a typo."""
    state.ever_connected = True


def fail_in_a_row(
    state: PoolState, n: int, took: float, fault: ConnectFault = ConnectFault.REFUSED
) -> list[float]:
    """Fail ``n`` attempts of the one retrier, each as soon as it is due;
    return the delays the state asked for."""
    now, delays = 1.0, []
    for _ in range(n):
        now += state.connect_delay(now) + took
        assert state.connect_failed(REFUSED, now, fault, took) is True
        delays.append(state.connect_delay(now))
    return delays


def waiting_state(**kwargs: object) -> PoolState:
    state = make_state(min_size=0, max_size=4, reconnect_max=5.0, **kwargs)
    ever_connected(state)
    state.enqueue(Waiter(None, 0.5))
    assert state.plan_connects(0.5) == 1
    return state


def test_fast_failures_retry_on_the_short_interval_while_a_caller_waits() -> None:
    state = waiting_state()
    delays = fail_in_a_row(state, 40, took=0.002)
    # Without the fast path the 40th delay would be the 5 s cap (4-5 s).
    assert delays == pytest.approx([0.05] * 40)
    assert state.connect_errors == 40 and state.waiters  # nobody failed early


def test_slow_failures_back_off_even_while_a_caller_waits() -> None:
    state = waiting_state()
    delays = fail_in_a_row(
        state, 10, took=FAST_FAILURE + 1.0, fault=ConnectFault.TRANSIENT
    )
    assert delays[0] == pytest.approx(0.05)  # never below reconnect_min
    assert delays[-1] == pytest.approx(5.0 * 0.9)  # capped (rand=0.5: 10% off)
    assert all(b >= a for a, b in itertools.pairwise(delays))


def test_a_full_server_is_never_retried_fast() -> None:
    """Too many connections fails fast but must not be hammered (S5)."""
    state = waiting_state()
    delays = fail_in_a_row(state, 10, took=0.001, fault=ConnectFault.BUSY)
    assert delays[-1] == pytest.approx(4.5)


def test_fast_interval_none_keeps_the_backoff() -> None:
    state = waiting_state(reconnect_fast_interval=None)
    delays = fail_in_a_row(state, 10, took=0.001)
    assert delays[-1] == pytest.approx(4.5)
    assert state.hurry_reconnect() is False


def test_a_caller_arriving_after_a_gentle_backoff_hurries_the_retry() -> None:
    """With nobody waiting the refill backs off; the first caller brings the
    next attempt to one short interval after the last fast failure."""
    state = make_state(min_size=1, max_size=4, reconnect_max=5.0)
    ever_connected(state)
    assert state.plan_connects(0.0) == 1
    now = 0.0
    for _ in range(10):  # min_size refill, no caller: back off toward 5 s
        now += state.connect_delay(now) + 0.001
        assert state.connect_failed(REFUSED, now, ConnectFault.REFUSED, 0.001)
    assert state.connect_delay(now) == pytest.approx(4.5)
    state.enqueue(Waiter(None, now + 0.01))
    assert state.hurry_reconnect() is True
    assert state.connect_delay(now + 0.01) == pytest.approx(0.04)
    assert state.hurry_reconnect() is False  # already due: nothing to wake
    assert state.plan_connects(now + 0.01) == 0  # still one retrier only


def test_a_caller_does_not_hurry_a_retry_after_a_slow_failure() -> None:
    state = make_state(min_size=1, max_size=4, reconnect_max=5.0)
    ever_connected(state)
    assert state.plan_connects(0.0) == 1
    now = 0.0
    for _ in range(10):
        now += state.connect_delay(now) + 2.0
        assert state.connect_failed(TimeoutError(), now, ConnectFault.TRANSIENT, 2.0)
    before = state.connect_delay(now)
    state.enqueue(Waiter(None, now))
    assert state.hurry_reconnect() is False
    assert state.connect_delay(now) == before


def test_permanent_errors_are_not_paced_fast_and_reach_the_caller() -> None:
    state = make_state(min_size=0, max_size=4)
    waiter = Waiter(None, 0.0)
    state.enqueue(waiter)
    assert state.plan_connects(0.0) == 1
    auth = Exception('password authentication failed for user "u"')
    assert state.connect_failed(auth, 0.01, ConnectFault.AUTH, 0.005) is False
    assert waiter in state.failed_waiters and waiter.error is not None
    assert state.last_failure_fast is False
    # A refusal before the server was ever reached is permanent too.
    state = make_state(min_size=0, max_size=4)
    waiter = Waiter(None, 0.0)
    state.enqueue(waiter)
    assert state.plan_connects(0.0) == 1
    state.connect_failed(REFUSED, 0.01, ConnectFault.REFUSED, 0.001)
    assert waiter.error is not None and state.last_failure_fast is False


def test_attempt_rate_while_down_is_bounded() -> None:
    """Ten seconds of instant refusals with a caller waiting: at most ~20/s."""
    state = waiting_state()
    now, attempts = 1.0, 0
    while now < 11.0:
        now += state.connect_delay(now) + 0.0005
        state.connect_failed(REFUSED, now, ConnectFault.REFUSED, 0.0005)
        attempts += 1
    assert 150 <= attempts <= 200


def test_success_clears_the_fast_flag() -> None:
    state = waiting_state()
    fail_in_a_row(state, 3, took=0.001)
    state.connected(object(), 2.0, 0.001)
    assert state.last_failure_fast is False and state.connect_failures == 0


def test_retry_delay_rule() -> None:
    def delay(**kw: object) -> float:
        args: dict[str, object] = {
            "failures": 10,
            "slow_failures": 0,
            "fast": True,
            "waiting": True,
            "base": 0.05,
            "cap": 5.0,
            "fast_interval": 0.05,
            "rand": lambda: 1.0,
        }
        args.update(kw)
        return retry_delay(**args)  # type: ignore[arg-type]

    assert delay() == pytest.approx(0.05)
    assert delay(waiting=False) == pytest.approx(5.0)
    assert delay(fast_interval=None) == pytest.approx(5.0)
    assert delay(fast=False, slow_failures=1) == pytest.approx(0.05)
    assert delay(fast=False, slow_failures=4) == pytest.approx(0.4)
    # The backoff is shorter still on the first failures with a long interval.
    assert delay(failures=1, fast_interval=0.2) == pytest.approx(0.05)


def test_one_slow_failure_amid_fast_ones_costs_a_short_step() -> None:
    """Regression (benchmark on a loaded machine): one attempt that took
    longer than FAST_FAILURE after 70 fast ones backed off to the 5 s cap."""
    state = waiting_state()
    fail_in_a_row(state, 70, took=0.002, fault=ConnectFault.TRANSIENT)
    fail_in_a_row(state, 1, took=FAST_FAILURE + 0.1, fault=ConnectFault.TRANSIENT)
    assert state.slow_failures == 1
    assert state.next_connect_at - state.last_failed_at == pytest.approx(0.05)
    # A refusal is fast however long it took (a loaded client).
    fail_in_a_row(state, 1, took=FAST_FAILURE + 0.1, fault=ConnectFault.REFUSED)
    assert state.last_failure_fast


@pytest.mark.parametrize("value", [0, -0.1, float("nan"), float("inf"), "0.05", True])
def test_reconnect_fast_interval_is_validated(value: object) -> None:
    with pytest.raises(ConfigError, match="reconnect_fast_interval"):
        PoolConfig(reconnect_fast_interval=value)  # type: ignore[arg-type]


def test_reconnect_fast_interval_accepts_none_and_seconds() -> None:
    assert PoolConfig(reconnect_fast_interval=None).reconnect_fast_interval is None
    assert PoolConfig(reconnect_fast_interval=0.2).reconnect_fast_interval == 0.2
    assert PoolConfig().reconnect_fast_interval == 0.05


def test_fast_retries_warn_only_now_and_then() -> None:
    state = waiting_state()
    now, loud = 1.0, []
    for _ in range(200):  # 10 s of fast retries
        now += state.connect_delay(now) + 0.001
        state.connect_failed(REFUSED, now, ConnectFault.REFUSED, 0.001)
        loud.append(state.log_connect_failure(now))
    assert loud[0] and 2 <= sum(loud) <= 3  # the first, then one per 5 s
    # Backed-off failures always warn.
    state = make_state(min_size=1, reconnect_max=0.2)
    assert state.plan_connects(0.0) == 1
    now = 0.0
    for _ in range(10):
        now += state.connect_delay(now) + 2.0
        state.connect_failed(TimeoutError(), now, ConnectFault.TRANSIENT, 2.0)
        assert state.log_connect_failure(now)
