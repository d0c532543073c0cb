"""Paired concurrency primitives for the asyncio shell and its generated sync twin.

Each asyncio primitive here (prefixed ``A``/``a``) has a thread twin of the
same shape; ``tools/gen_sync.py`` renames one into the other, so the code in
``_async/`` reads the same in both worlds.
"""

from __future__ import annotations

import asyncio
import heapq
import inspect
import itertools
import logging
import math
import os
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, TypeVar

_T = TypeVar("_T")

#: A user's connect callable: a coroutine function for AsyncPool...
AConnectFn = Callable[[], Awaitable[_T]]
#: ...and a plain function for Pool.
ConnectFn = Callable[[], _T]

__all__ = [
    "IS_ASYNC",
    "AConnectFn",
    "ADeadlines",
    "AEvent",
    "ASignal",
    "ConnectFn",
    "Event",
    "Overrun",
    "Signal",
    "acall",
    "acall_within",
    "ajoin",
    "asleep",
    "aspawn",
    "call",
    "call_within",
    "current_loop",
    "join",
    "sleep",
    "spawn",
]

# A lock is needed in both worlds: the core state is also read by stats() and
# by metrics exporters from other threads. It is never held across an await.
Lock = threading.Lock


#: True in ``_async/`` code. ``tools/gen_sync.py`` keeps only the ``else`` branch
#: of an ``if IS_ASYNC:`` block in the sync twin, and mypy is told (``always_true``)
#: to check only the async branch in the source.
IS_ASYNC = True


class ASignal:
    """A one-shot wake-up for one waiting task.

    ``set()`` may be called before or after ``wait()`` starts, at most once
    meaningfully. ``wait()`` returns True when set, False on timeout; a
    cancellation of the waiting task propagates unchanged (never swallowed).
    """

    __slots__ = ("_fut",)

    def __init__(self) -> None:
        self._fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def set(self) -> None:
        if not self._fut.done():
            self._fut.set_result(True)

    async def wait(self, timeout: float) -> bool:
        fut = self._fut
        if fut.done():
            return True
        if timeout <= 0:
            return False
        handle = fut.get_loop().call_later(timeout, _expire, fut)
        try:
            return await fut
        finally:
            handle.cancel()


def _expire(fut: asyncio.Future[bool]) -> None:
    if not fut.done():
        fut.set_result(False)


class ADeadlines:
    """One event-loop timer for the deadlines of many :class:`ASignal` waits.

    ``wait(signal, deadline)`` is ``signal.wait(deadline - now)`` without a
    timer of its own: deadlines go on a heap, and one ``call_later`` handle
    is armed for the earliest. When it fires, every signal past its deadline
    is woken with False (a timeout) and the timer is armed for the next.
    A wait that ends first (set, or its task cancelled) leaves its heap
    entry behind, dropped when it reaches the top or when such entries make
    up most of the heap, so a wait costs a heap push (O(1) when deadlines
    come in order, as with one pool ``timeout``) and no timer handle. Use
    from the one event loop of the pool that owns it.
    """

    __slots__ = ("_at", "_compact_at", "_handle", "_heap", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, asyncio.Future[bool]]] = []
        self._seq = itertools.count()
        self._handle: asyncio.TimerHandle | None = None
        self._at = math.inf  # the deadline the timer is armed for
        self._compact_at = _COMPACT_MIN

    async def wait(self, signal: ASignal, deadline: float) -> bool:
        """Wait for ``signal`` until ``deadline`` (``time.monotonic()``); False on timeout."""
        fut = signal._fut
        if fut.done():
            return True
        if deadline < math.inf:
            if deadline <= time.monotonic():
                return False
            heap = self._heap
            heapq.heappush(heap, (deadline, next(self._seq), fut))
            if deadline < self._at:
                self._arm(deadline)
            if len(heap) > self._compact_at:
                self._compact()
        return await fut

    def clear(self) -> None:
        """Drop every deadline and the timer (the waits are over: pool closed)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._at = math.inf
        self._heap.clear()
        self._compact_at = _COMPACT_MIN

    def _arm(self, deadline: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        delay = max(0.0, deadline - time.monotonic())
        self._handle = asyncio.get_running_loop().call_later(delay, self._fire)
        self._at = deadline

    def _fire(self) -> None:
        self._handle = None
        self._at = math.inf
        heap = self._heap
        now = time.monotonic()
        while heap:
            deadline, _, fut = heap[0]
            if deadline > now and not fut.done():
                self._arm(deadline)
                return
            heapq.heappop(heap)
            if not fut.done():
                fut.set_result(False)

    def _compact(self) -> None:
        # Most entries belong to waits that ended: keep the others.
        heap = [item for item in self._heap if not item[2].done()]
        heapq.heapify(heap)
        self._heap[:] = heap
        self._compact_at = max(_COMPACT_MIN, 2 * len(heap))
        if heap and heap[0][0] != self._at:
            self._arm(heap[0][0])


#: Heap size below which :class:`ADeadlines` never compacts.
_COMPACT_MIN = 64


class Signal:
    """Thread twin of :class:`ASignal`, built on a pre-acquired lock."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()

    def set(self) -> None:
        # try/except, not contextlib.suppress: this runs on every hand-off.
        try:  # noqa: SIM105
            self._lock.release()
        except RuntimeError:  # already set
            pass

    def wait(self, timeout: float) -> bool:
        if timeout <= 0:
            return self._lock.acquire(blocking=False)
        return self._lock.acquire(timeout=timeout)


class AEvent:
    """An asyncio event whose ``wait()`` takes a timeout and returns whether it was set."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self, timeout: float | None = None) -> bool:
        if self._event.is_set():
            return True
        if timeout is None:
            await self._event.wait()
            return True
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True


class Event(threading.Event):
    """Thread twin of :class:`AEvent` (a plain :class:`threading.Event`)."""


def aspawn(
    fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any, name: str | None = None
) -> asyncio.Task[Any]:
    """Run ``fn(*args)`` as a background task and return it."""
    return asyncio.get_running_loop().create_task(fn(*args), name=name)


def spawn(
    fn: Callable[..., Any], *args: Any, name: str | None = None
) -> threading.Thread:
    """Run ``fn(*args)`` in a background daemon thread and return it."""
    thread = threading.Thread(target=fn, args=args, name=name, daemon=True)
    thread.start()
    return thread


async def ajoin(tasks: Iterable[asyncio.Task[Any]], timeout: float) -> None:
    """Wait up to ``timeout`` for ``tasks`` to finish, then cancel the rest."""
    pending = [t for t in tasks if not t.done()]
    if not pending:
        return
    _, still = await asyncio.wait(pending, timeout=timeout)
    for task in still:
        task.cancel()
    if still:
        await asyncio.wait(still, timeout=1.0)


def join(threads: Iterable[threading.Thread], timeout: float) -> None:
    """Wait up to ``timeout`` in all for ``threads`` to finish (daemons are then left)."""
    deadline = time.monotonic() + timeout
    for thread in list(threads):
        if thread is threading.current_thread():
            continue
        thread.join(max(0.0, deadline - time.monotonic()))


async def asleep(seconds: float) -> None:
    """Sleep for ``seconds``."""
    await asyncio.sleep(seconds)


def sleep(seconds: float) -> None:
    """Sleep for ``seconds``."""
    time.sleep(seconds)


async def acall(fn: Callable[[Any], Any], arg: Any) -> Any:
    """Call a user hook that may be a plain function or a coroutine function."""
    result = fn(arg)
    if inspect.isawaitable(result):
        return await result
    return result


def call(fn: Callable[[Any], Any], arg: Any) -> Any:
    """Call a user hook (sync twin of :func:`acall`)."""
    return fn(arg)


class Overrun(TimeoutError):
    """A call bounded by :func:`acall_within` / :func:`call_within` overran its budget."""


async def acall_within(
    fn: Callable[[Any], Awaitable[Any]],
    arg: Any,
    timeout: float,
    on_overrun: Callable[[Any], object],
    on_cancel: Callable[[Any], object] | None = None,
) -> Any:
    """Await ``fn(arg)`` for at most ``timeout`` seconds.

    Past that, ``on_overrun(arg)`` runs (it should make ``arg`` unusable,
    e.g. shut a connection's socket down, so the call fails at once), the
    call gets :data:`OVERRUN_GRACE` seconds to fail on its own, is cancelled
    if it has not, and :class:`Overrun` is raised. Aborting rather than
    cancelling first matters: some drivers answer a cancellation by talking
    to the server (a cancel request), which a hung server would hold for
    seconds. Whatever the call does afterwards is ignored.

    When the caller itself is cancelled and ``on_cancel`` is given, the call
    is neither cut off nor cancelled: ``on_cancel(task)`` takes it over (to
    let it finish in the background and keep ``arg``).
    """
    task = asyncio.ensure_future(fn(arg))
    handed_over = False
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if done:
            return task.result()
        if _run_overrun(on_overrun, arg):
            # Cut off, the call should fail at once on its own: let it,
            # rather than cancel it into a driver's cancel request.
            await asyncio.wait({task}, timeout=OVERRUN_GRACE)
    except BaseException:
        if not task.done():
            if on_cancel is not None:
                on_cancel(task)
                handed_over = True
                raise
            # The caller itself is cancelled: cut the call off the same way
            # before abandoning it (``arg`` is given up either way).
            _run_overrun(on_overrun, arg)
        raise
    finally:
        if not task.done() and not handed_over:
            task.cancel()
        task.add_done_callback(_consume)
    raise Overrun(f"no answer within {timeout:.3g} s")


#: Seconds an overrun asyncio call may take to wind down after its abort.
OVERRUN_GRACE = 0.2


def _consume(task: asyncio.Future[Any]) -> None:
    # Retrieve the outcome of an abandoned call, so asyncio does not log
    # "exception was never retrieved" for it.
    if not task.cancelled():
        task.exception()


def call_within(
    fn: Callable[[Any], Any],
    arg: Any,
    timeout: float,
    on_overrun: Callable[[Any], object],
    on_cancel: Callable[[Any], object] | None = None,
) -> Any:
    """Call ``fn(arg)``; bound it to ``timeout`` seconds (sync twin of :func:`acall_within`).

    A blocking call cannot be cancelled from inside, so a shared watchdog
    thread runs ``on_overrun(arg)`` once the budget is spent; it must make the
    blocked call fail (shut its socket down). The call's outcome is then
    replaced by :class:`Overrun`, even if it returned meanwhile: ``arg`` is
    no longer usable. ``on_cancel`` is accepted for symmetry and never
    called: a thread is not cancelled while it runs ``fn``.
    """
    if not timeout < threading.TIMEOUT_MAX:
        return fn(arg)  # no bound to keep
    ticket = _watchdog.arm(timeout, on_overrun, arg)
    try:
        result = fn(arg)
    except BaseException as exc:
        if _watchdog.disarm(ticket):
            raise Overrun(f"no answer within {timeout:.3g} s") from exc
        raise
    if _watchdog.disarm(ticket):
        raise Overrun(f"no answer within {timeout:.3g} s")
    return result


_logger = logging.getLogger("poolkeeper.pool")


def _run_overrun(on_overrun: Callable[[Any], object], arg: Any) -> bool:
    """Run ``on_overrun(arg)``; return whether it worked."""
    try:
        on_overrun(arg)
    except Exception as exc:
        _logger.warning(
            "could not abort a call that overran its deadline (%s): it runs on",
            type(exc).__name__,
        )
        return False
    return True


class _Ticket:
    __slots__ = ("arg", "done", "fired", "fn")

    def __init__(self, fn: Callable[[Any], object], arg: Any) -> None:
        self.fn = fn
        self.arg = arg
        self.done = False
        self.fired = False


class _Watchdog:
    """One on-demand daemon thread running the overrun callbacks of :func:`call_within`.

    Arming costs a heap push under a lock; the thread starts on first use and
    exits after a second with nothing armed.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, _Ticket]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, timeout: float, fn: Callable[[Any], object], arg: Any) -> _Ticket:
        ticket = _Ticket(fn, arg)
        deadline = time.monotonic() + timeout
        with self._cond:
            heapq.heappush(self._heap, (deadline, next(self._seq), ticket))
            thread = self._thread
            if thread is None or not thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="poolkeeper-watchdog", daemon=True
                )
                self._thread.start()
            elif self._heap[0][2] is ticket:
                self._cond.notify()
        return ticket

    def disarm(self, ticket: _Ticket) -> bool:
        """Mark ``ticket`` finished; return whether its callback already ran (or runs)."""
        with self._cond:
            ticket.done = True
            if self._heap and self._heap[0][2] is ticket:
                # Let the thread drop it now rather than at its deadline, so
                # it can exit once nothing is armed.
                self._cond.notify()
            return ticket.fired

    def _run(self) -> None:
        heap = self._heap
        with self._cond:
            while True:
                while heap and heap[0][2].done:
                    heapq.heappop(heap)
                if not heap:
                    if not self._cond.wait(1.0) and not heap:
                        if self._thread is threading.current_thread():
                            self._thread = None
                        return
                    continue
                delay = heap[0][0] - time.monotonic()
                if delay > 0:
                    self._cond.wait(min(delay, threading.TIMEOUT_MAX))
                    continue
                ticket = heapq.heappop(heap)[2]
                ticket.fired = True
                self._cond.release()
                try:
                    aborted = _run_overrun(ticket.fn, ticket.arg)
                finally:
                    self._cond.acquire()
                if not aborted:
                    # Nothing was cut: the call's own outcome stands.
                    ticket.fired = False


_watchdog = _Watchdog()


def _new_watchdog() -> None:
    # A forked child inherits the lock in whatever state and no thread.
    global _watchdog
    _watchdog = _Watchdog()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_watchdog)


#: Return the running event loop, or None outside one (a C function: it runs
#: on every checkout of an AsyncPool).
current_loop: Callable[[], asyncio.AbstractEventLoop | None] = (
    asyncio.events._get_running_loop
)
