"""Paired concurrency primitives for the asyncio shell and its generated sync twin.

Each asyncio primitive here (prefixed ``A``/``a``) has a thread twin of the
same shape; ``tools/gen_sync.py`` renames one into the other, so the code in
``_async/`` reads the same in both worlds.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
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
    "AEvent",
    "ASignal",
    "ConnectFn",
    "Event",
    "Signal",
    "acall",
    "ajoin",
    "asleep",
    "aspawn",
    "call",
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
    import time

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
    import time

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


#: Return the running event loop, or None outside one (a C function: it runs
#: on every checkout of an AsyncPool).
current_loop: Callable[[], asyncio.AbstractEventLoop | None] = (
    asyncio.events._get_running_loop
)
