"""The deadline helpers behind the bounded validation ping (``_concurrency``)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from poolkeeper import _concurrency
from poolkeeper._concurrency import Overrun, acall_within, call_within


def _watchdog_exits_within(seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while "poolkeeper-watchdog" in [t.name for t in threading.enumerate()]:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_call_within_returns_and_never_fires_in_time() -> None:
    fired: list[object] = []
    assert call_within(lambda x: x * 2, 21, 1.0, fired.append) == 42
    time.sleep(0.05)
    assert fired == []


def test_call_within_aborts_a_blocked_call_at_its_deadline() -> None:
    # The "socket": an event the abort sets; the blocked call waits on it.
    unblocked = threading.Event()
    aborted: list[threading.Event] = []

    def abort(event: threading.Event) -> None:
        aborted.append(event)
        event.set()

    def blocked(event: threading.Event) -> None:
        if not event.wait(5.0):
            raise AssertionError("never aborted")
        raise ConnectionError("socket shut down")

    started = time.monotonic()
    with pytest.raises(Overrun) as info:
        call_within(blocked, unblocked, 0.2, abort)
    elapsed = time.monotonic() - started
    assert 0.19 <= elapsed < 0.6, elapsed
    assert aborted == [unblocked]
    assert isinstance(info.value.__cause__, ConnectionError)
    assert isinstance(info.value, TimeoutError)


def test_call_within_overrun_wins_over_a_late_return() -> None:
    # The call returns, but only after the abort ran: the resource is gone,
    # so the caller must not use the result.
    def slow(arg: None) -> str:
        time.sleep(0.3)
        return "late"

    with pytest.raises(Overrun):
        call_within(slow, None, 0.05, lambda arg: None)


def test_many_calls_share_one_watchdog_thread_that_exits_when_idle() -> None:
    for _ in range(50):
        call_within(lambda x: x, 1, 10.0, lambda arg: None)
    names = [t.name for t in threading.enumerate()]
    assert names.count("poolkeeper-watchdog") <= 1
    assert _watchdog_exits_within(3.0)
    assert _concurrency._watchdog._heap == []


def test_acall_within_cancels_and_aborts() -> None:
    aborted: list[str] = []

    async def hang(arg: str) -> None:
        await asyncio.sleep(10)

    async def quick(arg: str) -> str:
        return arg

    async def main() -> None:
        assert await acall_within(quick, "ok", 1.0, aborted.append) == "ok"
        started = time.monotonic()
        with pytest.raises(Overrun):
            await acall_within(hang, "conn", 0.1, aborted.append)
        assert time.monotonic() - started < 0.5

    asyncio.run(main())
    assert aborted == ["conn"]


def test_a_finished_call_with_a_far_deadline_does_not_keep_the_thread() -> None:
    call_within(lambda x: x, 1, 60.0, lambda arg: None)
    assert _watchdog_exits_within(3.0)


def test_acall_within_aborts_before_it_cancels() -> None:
    # Some drivers answer a cancellation by talking to the server (psycopg
    # sends a cancel request and waits), which a hung server would hold: the
    # abort must come first, and the caller must not wait for the wind-down.
    order: list[str] = []

    async def stubborn(arg: str) -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            order.append("cancelled")
            await asyncio.sleep(2)
            raise

    async def main() -> float:
        started = time.monotonic()
        with pytest.raises(Overrun):
            await acall_within(stubborn, "conn", 0.2, lambda arg: order.append("abort"))
        return time.monotonic() - started

    elapsed = asyncio.run(main())
    assert order[:2] == ["abort", "cancelled"]
    assert elapsed < 0.2 + _concurrency.OVERRUN_GRACE + 0.2, elapsed


def test_acall_within_passes_the_call_s_own_timeout_error_through() -> None:
    async def driver_timeout(arg: None) -> None:
        raise TimeoutError("the driver's own command_timeout")

    aborted: list[object] = []

    async def main() -> None:
        with pytest.raises(TimeoutError) as info:
            await acall_within(driver_timeout, None, 5.0, aborted.append)
        assert not isinstance(info.value, Overrun)

    asyncio.run(main())
    assert aborted == []


def test_call_within_keeps_the_outcome_when_the_abort_fails() -> None:
    def cannot_abort(arg: object) -> None:
        raise NotImplementedError("this driver cannot abort")

    def slow(arg: None) -> str:
        time.sleep(0.2)
        return "answer"

    assert call_within(slow, None, 0.05, cannot_abort) == "answer"


def test_call_within_without_a_finite_bound_just_calls() -> None:
    assert call_within(lambda x: x + 1, 1, float("inf"), lambda arg: None) == 2
    assert call_within(lambda x: x + 1, 1, 1e12, lambda arg: None) == 2


def test_a_cancelled_caller_aborts_the_call_before_abandoning_it() -> None:
    order: list[str] = []
    unhandled: list[object] = []

    async def hang(arg: str) -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            order.append("cancelled")
            raise RuntimeError("wound down badly") from None

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(
            lambda loop, context: unhandled.append(context)
        )
        call = asyncio.ensure_future(
            acall_within(hang, "conn", 5.0, lambda arg: order.append("abort"))
        )
        await asyncio.sleep(0.05)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await asyncio.sleep(0.05)  # let the abandoned call finish

    asyncio.run(main())
    assert order == ["abort", "cancelled"]
    assert unhandled == []  # its outcome was retrieved
