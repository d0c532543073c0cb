"""Connecting: background refill with backoff, and a caller's wait for a connection.

Owns: planning and running connects (``_fill``, ``_spawn_connects``,
``_connect_worker`` with its retry delays), placing a new connection
(``_connected``), a connect in the caller (``_open_for_caller``), connect
failures and their logs, the ``configure`` hook, the first-connection adapter
check, the validation window a driver implies, and a caller's queued wait
(``_wait``: enqueue, start connects, time out).

May not touch: checkout validation, the return path, housekeeping rounds or
open/close; it sits directly on ``base`` and imports nothing above it.
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any

from poolkeeper._async.base import AsyncPoolBase, ConnT, _monotonic, logger
from poolkeeper._build import mypyc_attr
from poolkeeper._concurrency import IS_ASYNC, ASignal, acall
from poolkeeper._connect import GENERIC_DRIVERS, adapter_shortfalls
from poolkeeper._core.connect_errors import ConnectFault
from poolkeeper._core.entry import PoolEntry, Waiter
from poolkeeper._origin import from_driver
from poolkeeper.drivers._hosts import HostInfo, host_of
from poolkeeper.drivers.base import can_abort, cannot_abort
from poolkeeper.drivers.session import supports_reset_session
from poolkeeper.errors import ConfigError, PoolTimeout, PoolWarning


@mypyc_attr(allow_interpreted_subclasses=True)  # (see checkout.py)
class AsyncConnecting(AsyncPoolBase[ConnT]):
    """Connect, refill and wait (see the module docstring)."""

    def _validate_window(self) -> float | None:
        policy = self._config.validate
        if policy == "auto":
            # A callable's driver is known after its first connection.
            generic = GENERIC_DRIVERS | {"callable"}
            policy = "never" if self._driver.name in generic else "idle"
        # "always": -inf, not 0, so that no clock reading can make a
        # connection look fresher than "used just now" (a connection returned
        # by another thread after the caller read the clock).
        windows = {
            "always": -math.inf,
            "idle": self._config.validate_after,
            "never": None,
        }
        return windows[policy]

    def _fill(self) -> None:
        with self._lock:
            n = self._state.plan_connects(_monotonic())
        self._spawn_connects(n)

    def _spawn_connects(self, n: int) -> None:
        for _ in range(n):
            self._background(self._connect_worker, "connect")

    async def _connect_worker(self) -> None:
        """Open one connection (retrying with backoff while it is needed) and place it."""
        state = self._state
        # A connection opened and not yet placed in the pool: closed here if
        # the worker is interrupted meanwhile (a cancelled task, the pool's
        # close()), not left to the garbage collector.
        unplaced: Any = None
        try:
            while True:
                if not await self._sleep_before_retry():
                    with self._lock:
                        state.connect_cancelled()
                    return
                started = _monotonic()
                try:
                    conn = unplaced = await self._driver.connect()
                    if not self._adapter_checked:
                        await self._check_adapter(conn)
                except Exception as exc:
                    error, fault = exc, self._classify(exc)
                    if unplaced is not None and not isinstance(exc, ConfigError):
                        await self._close_unplaced(unplaced)  # else closed already
                    unplaced = None
                else:
                    hook_error = await self._configure_new(conn)
                    if hook_error is None:
                        if self._baseline is not None:
                            # What configure installed stays; see drivers.base.
                            self._baseline(conn)
                        if not IS_ASYNC:
                            # `with pool.acquire() as conn:` gives it back on exit.
                            self._held.adopt(conn)
                        break
                    unplaced = None  # closed by _configure_new
                    error, fault = hook_error, self._classify(hook_error)
                    if fault is ConnectFault.TRANSIENT and not from_driver(
                        hook_error, conn
                    ):
                        # The application's own code failed: retrying will not fix it.
                        fault = ConnectFault.CONFIG
                if not self._connect_failed(error, fault, _monotonic() - started):
                    return
            unplaced = None
            waiter, n = self._connected(conn, started)
        except BaseException:
            with self._lock:
                state.connect_cancelled()
            if unplaced is not None:
                await self._close_unplaced(unplaced)
            raise
        if waiter is not None:
            waiter.signal.set()
        self._spawn_connects(n)
        if state.retired:
            await self._close_retired()

    async def _sleep_before_retry(self) -> bool:
        """Wait until the next connect attempt is due; False: the pool is closing.

        The due time can move earlier meanwhile (a caller queued after a fast
        failure: ``hurry_reconnect``); :meth:`_wake_retry` then ends the sleep.
        """
        state = self._state
        while True:
            with self._lock:
                # Read under the lock: close() sets _closing, then wakes.
                if self._closing.is_set():
                    return False
                delay = state.connect_delay(_monotonic())
                if delay <= 0:
                    return True
                wake = self._retry_wake = ASignal()
            await wake.wait(delay)

    def _wake_retry(self) -> None:
        """End a connect worker's sleep before its retry (it re-reads when it is due)."""
        with self._lock:
            wake, self._retry_wake = self._retry_wake, None
        if wake is not None:
            wake.set()

    def _connected(self, conn: Any, started: float) -> tuple[Waiter | None, int]:
        """Add a connection opened since ``started``: return the waiter it
        went to, if any, and how many connects to start next."""
        state = self._state
        reached = _reached(conn) if self._roles is not None else None
        now = _monotonic()
        with self._lock:
            if state.validate_window is None:
                state.validate_window = self._validate_window()
            waiter = state.connected(conn, now, now - started, reached)
            n = state.plan_connects(now)
        logger.debug("pool %r: connection opened in %.3f s", self.name, now - started)
        if self._events.connect:
            self._emit("connect", conn, duration=now - started)
        return waiter, n

    async def _open_for_caller(self) -> bool:
        """Open one connection in the caller, if none is idle and there is room.

        For integrations whose users expect a checkout to connect by itself
        (SQLAlchemy's QueuePool does): a connect error reaches the caller as
        raised, and the new connection joins the pool as one of its own, to
        the oldest waiter, else idle. Returns whether a connection was added.
        """
        state = self._state
        with self._lock:
            if not state.reserve_connect():
                return False
        started = _monotonic()
        unplaced: Any = None
        try:
            conn = unplaced = await self._driver.connect()
            if not self._adapter_checked:
                await self._check_adapter(conn)
            hook_error = await self._configure_new(conn)  # closes conn on failure
            if hook_error is not None:
                unplaced = None
                raise hook_error
        except BaseException as exc:
            with self._lock:
                state.connect_cancelled()
            if unplaced is not None and not isinstance(exc, ConfigError):
                # Interrupted, or failed in _check_adapter (a ConfigError:
                # closed there already).
                await self._close_unplaced(unplaced)
            raise
        if self._baseline is not None:
            self._baseline(conn)
        waiter, n = self._connected(conn, started)
        if waiter is not None:
            waiter.signal.set()
        self._spawn_connects(n)
        if state.retired:
            await self._close_retired()
        return True

    async def _close_unplaced(self, conn: Any) -> None:
        """Close a new connection whose connect was interrupted before it
        joined the pool (a cancelled configure hook, say): at once, so that
        neither the server session nor the driver's socket waits for the
        garbage collector."""
        try:
            await self._driver.close(conn)
        except Exception as exc:
            self._log_close_error(exc)

    def _take_out(
        self, conn: ConnT, keep_idle: int | None, reason: str | None = None
    ) -> bool:
        """Take a checked-out connection out of the pool; its user closes it.

        See :meth:`PoolState.shed`: with ``keep_idle``, only when no caller
        waits and that many are idle already; None: always (the user closed
        it already, or, with ``reason="detached"``, keeps it for itself).
        Returns whether it left; a replacement is opened for waiting callers.
        """
        state = self._state
        with self._lock:
            entry = state.in_use.get(id(conn))
            if entry is None or entry.live_conn() is not conn:
                return False
            # Held weakly since acquire() (dropped-connection detection):
            # the pool owns it strongly again from here on.
            entry.conn = conn
            if not state.shed(entry, _monotonic(), keep_idle, reason):
                return False
            n = state.plan_connects(_monotonic())
        if self._events.discard:
            self._emit("discard", conn, reason=entry.close_reason)
        self._spawn_connects(n)
        return True

    def _connect_failed(
        self, error: BaseException, fault: ConnectFault, took: float
    ) -> bool:
        """Record a failed connect (or configure hook) that lasted ``took``
        seconds, wake the waiters it fails, tell listeners and the log;
        return whether to retry."""
        state = self._state
        with self._lock:
            now = _monotonic()
            retry = state.connect_failed(error, now, fault, took)
            delay = state.connect_delay(now)
            failures = state.connect_failures
            loud = state.log_connect_failure(now)
            failed, state.failed_waiters = state.failed_waiters, []
        for failed_waiter in failed:
            failed_waiter.signal.set()
        if self._events.connect_error:
            self._emit("connect_error", None, error=error)
        self._log_connect_failure(error, failures, delay if retry else None, loud)
        return retry

    async def _check_adapter(self, conn: Any) -> None:
        """Check what the adapter of a callable's first connection supports.

        ``reset="full"`` without a full reset for these connections is refused
        (the connection is closed; the ConfigError is a connect error that
        retrying cannot fix, so waiting callers get it at once). That
        ``query_timeout`` cannot cut a stuck call short is said once.
        """
        if self._reset_full and not supports_reset_session(self._driver):
            await self._driver.close(conn)
            raise ConfigError(
                f"reset='full' is not supported by the {self._driver.name} adapter "
                "for connections from a callable; pass a reset callable, or build "
                "the pool from a URL"
            )
        with self._lock:
            if self._adapter_checked:
                return
            self._adapter_checked = True
        for message in adapter_shortfalls(self._driver, self._query_watch is not None):
            try:
                warnings.warn(
                    PoolWarning(f"pool {self.name!r}: {message}"), stacklevel=1
                )
            except Warning:
                # Turned into an error by a filter, in a background connect
                # where no caller could catch it: log it instead.
                logger.warning("pool %r: %s", self.name, message)
        if not can_abort(self._driver):
            # Validation pings are not bounded; the watchdog still marks a
            # stuck checkout (discarded on return, QueryTimeout) but leaves
            # the call alone.
            self._abort = None
            if self._query_watch is not None:
                self._query_watch = (*self._query_watch[:2], cannot_abort)

    async def _configure_new(self, conn: Any) -> Exception | None:
        """Run the ``configure`` hook; on failure close ``conn``, return the error."""
        if self._configure is None:
            return None
        try:
            await acall(self._configure, conn)
        except Exception as exc:
            logger.warning(
                "pool %r: configure hook failed, closing the connection: %s",
                self.name,
                self._describe(exc),
            )
            await self._driver.close(conn)
            return exc
        return None

    def _log_connect_failure(
        self, exc: BaseException, failures: int, retry_in: float | None, loud: bool
    ) -> None:
        # Fast retries (20 a second) are logged at WARNING only now and then.
        level = logging.WARNING if loud else logging.DEBUG
        if retry_in is None:
            logger.log(
                level,
                "pool %r: connect to %s failed (%d in a row): %s",
                self.name,
                self._target,
                failures,
                self._describe(exc),
            )
        else:
            logger.log(
                level,
                "pool %r: connect to %s failed (%d in a row), retrying in %.2f s: %s",
                self.name,
                self._target,
                failures,
                retry_in,
                self._describe(exc),
            )

    async def _wait(self, timeout: float, may_connect: bool = True) -> PoolEntry:
        """Wait for a connection; ``timeout=0`` waits only for a connect
        started for this caller (``may_connect``: the caller's own timeout
        is 0, not one that ran out)."""
        state = self._state
        now = _monotonic()
        deadline = now + timeout
        waiter = Waiter(ASignal(), now)
        hurried = False
        with self._lock:
            # A connection may have come back since the caller looked: with
            # no waiter queued it went to the idle stack, so take it rather
            # than wait for the next return.
            entry = state.checkout(now)
            if entry is None:
                state.enqueue(waiter)
                # After a fast failure the retry is due soon, not at the end
                # of a backoff grown while nobody waited.
                hurried = state.hurry_reconnect()
                n = state.plan_connects(now)
                if not timeout and may_connect:
                    deadline += state.wait_for_connect(waiter, now)
        if entry is not None:
            return entry
        if hurried:
            self._wake_retry()
        self._spawn_connects(n)
        while True:
            try:
                if IS_ASYNC:
                    woken = await self._deadlines.wait(waiter.signal, deadline)
                else:
                    woken = waiter.signal.wait(deadline - _monotonic())
            except BaseException:
                # Cancelled: never keep a connection handed over meanwhile (it
                # was not counted as a checkout: recall() leaves no trace).
                with self._lock:
                    entry = state.abandon(waiter, timed_out=False)
                    handed_on = state.recall(entry, _monotonic()) if entry else None
                    handed_on = handed_on or state.next_to_nudge()
                if handed_on is not None:
                    handed_on.signal.set()
                if state.retired:
                    # The connection handed over meanwhile retired on its way
                    # back (lifetime, pool closed): close it without waiting here.
                    self._spawn_close_retired()
                raise
            # (No `continue` inside the `with`: mypyc cannot compile one in
            # the try/finally a sync `with` becomes.)
            requeued = False
            nudge = None
            with self._lock:
                # Nudged (not fair mode): try to take an idle connection.
                nudged = woken and waiter.entry is None and waiter.error is None
                if nudged and state.checkout_for(waiter, _monotonic()) is None:
                    waiter.signal = ASignal()
                    state.requeue(waiter)
                    requeued = waiter.error is None
                if not requeued:
                    entry = state.abandon(waiter, timed_out=True)
                    if entry is not None:
                        state.served(waiter, _monotonic())
                    else:
                        nudge = state.next_to_nudge()
            if requeued:
                continue
            if nudge is not None:
                nudge.signal.set()
            break
        if entry is not None:
            return entry
        raise self._wait_failed(waiter, now, timeout)

    def _wait_failed(
        self, waiter: Waiter, started: float, timeout: float
    ) -> BaseException:
        """The error for a caller whose wait ended without a connection (the
        one the pool gave it, or a :class:`PoolTimeout`); tells listeners."""
        error = waiter.error
        if error is not None:
            if isinstance(error, PoolTimeout) and self._events.timeout:
                self._emit("timeout", None, duration=_monotonic() - started)
            return error
        if self._events.timeout:
            self._emit("timeout", None, duration=_monotonic() - started)
        # Under the lock: the message reads the connections in use, which
        # other threads change meanwhile (iterating them unlocked made a
        # busy pool's timeout a RuntimeError, "dictionary keys changed").
        with self._lock:
            timed_out = self._state.timeout_error(timeout)
        return timed_out


def _reached(conn: Any) -> HostInfo | None:
    """Where a new connection went and its role, read without I/O (None:
    the connection is not one :func:`host_of` knows, e.g. wrapped)."""
    try:
        return host_of(conn)
    except Exception:
        return None
