"""Lifecycle: open, close, resize, and starting afresh after ``os.fork()``.

Owns: :meth:`open` (and waiting for ``min_size``), :meth:`close`, the
``with``/``async with`` protocol of the pool, :meth:`resize`, the core state
a pool starts with (``_new_state``), and ``_after_fork``.

May not touch: checkout, return and validation; it imports only
``housekeeping`` and the modules below it.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, NoReturn, TypeVar

from poolkeeper import _fork as fork_safety
from poolkeeper._async.base import ConnT, _monotonic, logger
from poolkeeper._async.housekeeping import AsyncHousekeeper, AsyncHousekeeping
from poolkeeper._build import mypyc_attr
from poolkeeper._concurrency import (
    IS_ASYNC,
    ADeadlines,
    AEvent,
    Lock,
    ajoin,
    current_loop,
)
from poolkeeper._config import check_timeout_arg
from poolkeeper._core.connect_errors import chained
from poolkeeper._core.state import PoolState
from poolkeeper._hoststate import HostTable
from poolkeeper._misuse import needs_async_with
from poolkeeper.errors import PoolClosed, PoolTimeout


@mypyc_attr(allow_interpreted_subclasses=True)  # (see checkout.py)
class AsyncLifecycle(AsyncHousekeeping[ConnT]):
    """Open, close, resize, fork (see the module docstring)."""

    def _new_state(self) -> PoolState:
        state = PoolState(self._config, self.name, secrets=self._secrets)
        state.validate_window = self._validate_window()
        state.check_on_checkout = self._check is not None
        if self._roles is not None:
            # Per-host state: where each connection went, its role, and
            # which hosts turned suspect (see _hoststate and docs/CLUSTERS.md).
            state.hosts = HostTable()
            state.want_role = self._roles[0]
            interval = self._config.role_check_interval
            if interval is not None:
                state.next_role_round = _monotonic() + interval
        return state

    async def open(self, wait: bool = False, timeout: float | None = None) -> None:
        """Start the pool: begin filling it to ``min_size`` in the background.

        Opening an open pool does nothing. The pool also opens itself on first
        use and when its ``with`` block is entered.

        Args:
            wait: Block until ``min_size`` connections are open.
            timeout: Seconds to wait with ``wait=True`` (default: the pool's
                ``timeout``).

        Raises:
            PoolClosed: The pool was closed.
            PoolTimeout: ``wait=True`` and the pool could not be filled in
                time, or a connect failed (chained as ``__cause__``); the pool
                is closed in that case.
        """
        if self._state.closed:
            raise PoolClosed(f"pool {self.name!r} is closed", pool_name=self.name)
        if not self._opened:
            self._start()
        if wait:
            await self._wait_filled(check_timeout_arg(timeout, self._timeout))

    def _start(self) -> None:
        self._opened = True
        if IS_ASYNC:
            # Remembered to give a clear error when used from another loop.
            self._loop = current_loop()
            self._held.loop = self._loop
        self._housekeeper = AsyncHousekeeper(self)
        self._housekeeper.start()
        fork_safety.register(self)
        self._fill()

    async def _wait_filled(self, timeout: float) -> None:
        deadline = _monotonic() + timeout
        errors_before = self._state.connect_errors
        while True:
            state = self._state
            if state.size >= state.min_size:
                return
            if state.connect_errors > errors_before or _monotonic() >= deadline:
                error = state.last_connect_error
                await self.close()
                timed_out = PoolTimeout(
                    f"pool {self.name!r} could not open {state.min_size} connections "
                    f"within {timeout:.1f} s ({state.size} open)"
                    + (
                        f"; last connect error: {self._describe(error)}"
                        if error
                        else ""
                    ),
                    pool_name=self.name,
                    timeout=timeout,
                )
                raise chained(timed_out, error)
            await self._closing.wait(0.005)

    async def close(self, timeout: float = 5.0) -> None:
        """Close the pool.

        Waiting callers get :class:`~poolkeeper.PoolClosed`, idle connections
        are closed now and connections in use when they come back. Closing a
        closed pool does nothing.

        Args:
            timeout: Seconds to wait for background work (connects in flight,
                housekeeping) to stop.
        """
        with self._lock:
            if self._state.closed:
                return
            waiters = self._state.close()
            retired = self._state.take_retired()
        self._closing.set()
        self._wake_retry()
        for waiter in waiters:
            waiter.signal.set()
        if IS_ASYNC:
            self._deadlines.clear()
        await self._close_entries(retired)
        tasks = list(self._tasks)
        if self._housekeeper is not None:
            tasks.append(self._housekeeper.handle)
        await ajoin([t for t in tasks if t is not None], timeout)
        logger.debug("pool %r closed", self.name)

    async def __aenter__(self: _PoolT) -> _PoolT:
        await self.open()
        return self

    if IS_ASYNC:
        # `with` instead of `async with`: say so, rather than Python's
        # "does not support the context manager protocol".

        def __enter__(self) -> NoReturn:
            needs_async_with(type(self).__name__, "pool")

        def __exit__(self, *exc_info: object) -> None:
            return None

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def resize(
        self, min_size: int | None = None, max_size: int | None = None
    ) -> None:
        """Change ``min_size`` and/or ``max_size`` of a running pool.

        Extra idle connections close at once; extra busy ones when they return.

        Raises:
            ConfigError: The new sizes are invalid.
        """
        with self._lock:
            self._state.resize(min_size, max_size)
            n = self._state.plan_connects(_monotonic()) if self._opened else 0
        self._spawn_connects(n)
        await self._close_retired()

    def _after_fork(self) -> None:
        """Forget everything inherited from the parent (runs in a forked child).

        The child must never talk on, or close, the parent's connections:
        their sockets are pointed at /dev/null and the objects are kept alive,
        so no finalizer sends a goodbye that would end the parent's sessions.
        The pool starts empty and refills on first use.
        """
        state = self._state
        held = (*state.idle, *state.in_use.values(), *state.retired)
        conns = [entry.live_conn() for entry in held]
        fork_safety.quarantine([conn for conn in conns if conn is not None])
        self._lock = Lock()
        self._probe_lock = Lock()
        self._state = self._new_state()
        self._state.closed = state.closed
        self._closing = AEvent()
        self._retry_wake = None
        self._tasks = set()
        self._housekeeper = None
        self._watching = self._watch_again = False
        self._opened = False
        self._loop = None
        if IS_ASYNC:
            # The parent's timer belongs to its event loop.
            self._deadlines = ADeadlines()


#: A pool class, for methods returning their own pool.
_PoolT = TypeVar("_PoolT", bound=AsyncLifecycle[Any])
