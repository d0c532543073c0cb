"""The pool's shared state and the services every concern uses.

Owns: the attributes a pool instance carries (declared once here, set by
``AsyncPool.__init__``), events (:meth:`on`, :meth:`off`, ``_emit``),
background work (``_background``), closing retired connections, log masking
(``_describe``), the event-loop check, and :meth:`stats`.

May not touch: checkout, return, validation, connecting or housekeeping
logic; those live in the modules layered above this one (``connecting``,
``housekeeping``, ``lifecycle``, ``validation``, ``checkin``, ``checkout``),
each a mixin class that inherits from the one below it. Nothing here imports
them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from poolkeeper._build import mypyc_attr
from poolkeeper._concurrency import (
    IS_ASYNC,
    ADeadlines,
    AEvent,
    ASignal,
    Lock,
    aspawn,
    current_loop,
)
from poolkeeper._config import PoolConfig, scrub
from poolkeeper._core.connect_errors import ConnectFault
from poolkeeper._core.entry import PoolEntry
from poolkeeper._core.events import EventBus, Listener, PoolEvent
from poolkeeper._core.events import emit as emit_event
from poolkeeper._core.state import PoolState
from poolkeeper._core.stats import PoolStats
from poolkeeper._credentials import Secrets
from poolkeeper._held import HeldConnections
from poolkeeper._sites import Site
from poolkeeper.drivers.base import AsyncDriver, QueryWatch
from poolkeeper.errors import PoolError

ConnT = TypeVar("ConnT")

logger = logging.getLogger("poolkeeper.pool")
_monotonic = time.monotonic


@mypyc_attr(allow_interpreted_subclasses=True)  # (see checkout.py)
class AsyncPoolBase(Generic[ConnT]):
    """Attributes and shared services of a pool (see the module docstring)."""

    name: str
    _secrets: Secrets
    _driver: AsyncDriver
    _target: str
    _config: PoolConfig
    _timeout: float
    _configure: Callable[[Any], Any] | None
    _reset: Callable[[Any], Any] | None
    _reset_full: bool
    _adapter_checked: bool
    _check: Callable[[Any], Any] | None
    _watch_checkout: bool
    _idle_probe: Callable[[Any], object]
    _idle_value: object
    _baseline: Callable[[Any], None] | None
    _clear_state: Callable[[Any], Any] | None
    _classify: Callable[[BaseException], ConnectFault]
    # (target_session_attrs, the adapter's session_role): None when the
    # driver cannot tell a connection's host and role (see drivers.base).
    _roles: tuple[str, Callable[[Any], Any]] | None
    _query_watch: QueryWatch | None
    _abort: Callable[[Any], None] | None
    _lock: Lock
    _probe_lock: Lock
    _state: PoolState
    _events: EventBus
    _opened: bool
    _closing: AEvent
    # Set to wake a connect worker sleeping before its retry (see
    # AsyncConnecting._sleep_before_retry); None when none sleeps.
    _retry_wake: ASignal | None
    _tasks: set[Any]
    _loop: Any
    _held: HeldConnections
    #: Whether a task or thread looks for lent connections closed by their
    #: callers while others wait (``_watch_closed``).
    _watching: bool
    _watch_again: bool
    _rollback_sites: set[Site]
    if IS_ASYNC:
        _deadlines: ADeadlines

    def on(self, event: str, listener: Listener) -> None:
        """Call ``listener(event)`` with a :class:`~poolkeeper.PoolEvent` on each ``event``.

        Events: connect, connect_error, checkout, checkin, discard, timeout,
        leak. Listeners run in the thread or task that caused the event and
        must be quick; an exception in a listener is logged and ignored.

        Raises:
            ConfigError: ``event`` is not an event name.
        """
        self._events.listeners(event).append(listener)

    def off(self, event: str, listener: Listener) -> None:
        """Stop calling ``listener`` on ``event`` (no error if it was not subscribed)."""
        listeners = self._events.listeners(event)
        if listener in listeners:
            listeners.remove(listener)

    def _emit(
        self,
        kind: str,
        conn: Any,
        duration: float = 0.0,
        reason: str | None = None,
        error: BaseException | None = None,
        stack: str | None = None,
    ) -> None:
        # Called on the hot path whenever someone listens: no validation of
        # `kind` (the call sites are fixed), positional construction.
        event = PoolEvent(kind, self.name, conn, duration, reason, error, stack)
        emit_event(getattr(self._events, kind), event)

    def stats(self) -> PoolStats:
        """Return a snapshot of the pool's gauges, counters and time summaries.

        The pool's lock is held only while the numbers are copied; quantiles
        are computed after it is released, so calling this often (a metrics
        scrape, a health endpoint) does not hold up acquires and releases.
        """
        with self._lock:
            copied = self._state.stats_copy()
        return copied.build()

    def _describe(self, exc: BaseException) -> str:
        """``repr(exc)`` with any password from the URL or connect_args masked."""
        return scrub(repr(exc), self._secrets)

    def _log_close_error(self, exc: Exception) -> None:
        logger.debug(
            "pool %r: error closing a connection: %s", self.name, self._describe(exc)
        )

    def _background(self, fn: Callable[..., Any], what: str, *args: Any) -> None:
        """Run ``fn(*args)`` as pool background work (joined by :meth:`close`)."""
        if not IS_ASYNC:
            # Threads have no done-callback: forget the finished ones here.
            self._tasks = {t for t in self._tasks if t.is_alive()}
        task = aspawn(fn, *args, name=f"poolkeeper-{what}-{self.name}")
        self._tasks.add(task)
        if IS_ASYNC:
            task.add_done_callback(self._tasks.discard)

    def _spawn_close_retired(self) -> None:
        self._background(self._close_retired, "close")

    async def _close_retired(self) -> None:
        with self._lock:
            retired = self._state.take_retired()
        await self._close_entries(retired)

    async def _close_entries(self, entries: list[PoolEntry]) -> None:
        for i, entry in enumerate(entries):
            reason = entry.close_reason
            logger.debug("pool %r: closing a connection (%s)", self.name, reason)
            if self._events.discard:
                self._emit("discard", entry.conn, reason=reason)
            with self._probe_lock:
                pass  # a watchdog probe of this connection finishes first
            try:
                await self._driver.close(entry.conn)
            except Exception as exc:
                self._log_close_error(exc)
            except BaseException:
                # Interrupted (a cancelled task): the core already counts these
                # as closed, so they must still close, in the background (this
                # one again: closing twice is harmless, half-closed is not).
                self._background(self._close_quietly, "close", entries[i:])
                raise

    async def _close_quietly(self, entries: list[PoolEntry]) -> None:
        for entry in entries:
            try:
                await self._driver.close(entry.conn)
            except Exception as exc:
                self._log_close_error(exc)

    def _check_loop(self) -> None:
        loop = current_loop()
        if loop is not self._loop:
            if self._loop is None:
                self._loop = loop
                return
            raise PoolError(
                f"pool {self.name!r} was opened in another event loop; an AsyncPool "
                "can only be used from the loop that opened it",
                pool_name=self.name,
            )
