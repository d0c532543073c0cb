"""Checkout and return: the hot path.

Owns: :meth:`connection` and its context (:class:`AsyncConnectionContext`),
``_acquire`` (the explicit checkout; ``Pool.acquire`` itself), its slow half
``_acquire_slow`` (open on first use, wait, validate, leak stacks), the
checkout event, and :meth:`release`. The fast paths are inlined in
``_acquire``/``release`` and in the context's ``__aenter__``/``__aexit__``
(keep them in step): one core call and no other Python call per cycle.
Anything slower goes through a method of a lower module.

May not touch: connecting, validation, housekeeping, lifecycle internals
(it calls their entry points); it imports ``checkin`` and below.
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Final, Generic, NoReturn

from poolkeeper._async.base import ConnT, _monotonic
from poolkeeper._async.checkin import AsyncCheckin
from poolkeeper._build import mypyc_attr
from poolkeeper._concurrency import IS_ASYNC, current_loop
from poolkeeper._config import check_timeout_arg
from poolkeeper._core.entry import PoolEntry, capture_stack
from poolkeeper._misuse import needs_async_with
from poolkeeper._sites import OUTSIDE_FILES, outside_frame

_getframe = sys._getframe


def _own_frames() -> int:
    """1 where this module's functions run in frames of their own (pure
    Python), 0 where they do not (compiled): how far up a caller's frame is."""
    return 1 if _getframe(0).f_code.co_name == "_own_frames" else 0


#: ``_getframe(_CALLER)`` in a method called from outside: the caller's frame.
_CALLER: Final = _own_frames()


# The pool class on top (pool.py) stays Python in the compiled build (mypyc
# cannot compile its overloaded __init__), so it subclasses this native class.
@mypyc_attr(allow_interpreted_subclasses=True)
class AsyncCheckout(AsyncCheckin[ConnT]):
    """Checkout and the fast return (see the module docstring)."""

    def connection(self, timeout: float | None = None) -> AsyncConnectionContext[ConnT]:
        """Borrow a connection for the duration of a ``with`` block.

        On normal exit an open transaction is committed, on an exception it is
        rolled back; then the connection goes back to the pool (or is closed if
        it broke).

        Args:
            timeout: Seconds to wait for a connection (default: the pool's).

        Raises:
            PoolTimeout: No connection within the timeout.
            TooManyWaiters: ``max_waiting`` callers are already waiting.
            PoolClosed: The pool is closed.
        """
        # The class has no __init__: no Python call to build it (and in the
        # compiled build a native allocation).
        context: AsyncConnectionContext[ConnT] = AsyncConnectionContext()
        context._pool = self
        context._timeout = timeout
        return context

    async def _acquire(self, timeout: float | None = None) -> ConnT:
        """Borrow a connection until :meth:`release`.

        ``with pool.acquire() as conn:`` releases it at the end of the block.
        A connection closed or dropped without :meth:`release` is noticed and
        its slot taken back, with a :class:`~poolkeeper.ConnectionLeakWarning`
        attributed to the line that acquired it.

        Raises:
            PoolTimeout: No connection within the timeout.
            TooManyWaiters: ``max_waiting`` callers are already waiting.
            PoolClosed: The pool is closed.
        """
        # The fast path: an idle connection that can go out as is (see
        # PoolState.acquire) and no check hook or leak detection that needs
        # to see it (listeners are told here). The rest: _acquire_slow().
        # Nested, not `and`-ed: the generator drops a bare IS_ASYNC block.
        frame = _getframe(_CALLER)
        if IS_ASYNC:  # noqa: SIM102
            if current_loop() is not self._loop:
                self._check_loop()
        now = _monotonic()
        entry = self._state.acquire(now, self._lock)
        if entry is None or self._watch_checkout:
            entry = await self._acquire_slow(entry, now, timeout)
        elif self._events.checkout:
            self._emit_checkout(entry, now)
        # Note the acquiring site (one frame) and hold the connection weakly
        # from here on (see _held.py); inlined: this is the hot path.
        code = frame.f_code
        if code.co_filename not in OUTSIDE_FILES:
            frame = outside_frame(frame)
            code = frame.f_code
        entry.site = (code, frame.f_lasti)
        conn: ConnT = entry.conn
        if entry.ref is not None:
            entry.conn = None
        elif self._held.weak:
            self._held.watch(entry)
        return conn

    async def _acquire_slow(
        self, entry: PoolEntry | None, now: float, timeout: float | None
    ) -> PoolEntry:
        """Finish a checkout that left the fast path of :meth:`_acquire`."""
        state = self._state
        # A checkout served at once has its (0 s) wait recorded already.
        record_wait = entry is None
        limit: float | None = None
        if entry is None:
            if not self._opened:
                await self.open()
            if self._held.pending or (
                state.size + state.connecting >= state.max_size and self._lends_any()
            ):
                # Before waiting: the slot of a connection an acquire() caller
                # closed or dropped may be free; and one it closes while
                # this caller waits is noticed at once (_watch_closed). Both
                # take the lock: skipped when no connection is lent through
                # acquire() (a pool used through connection() alone).
                self._take_unreleased()
                self._watch_closed()
            # Takes an idle connection that is there after all (expired ones
            # are retired on the way, due ones validated below), or waits.
            limit = check_timeout_arg(timeout, self._timeout)
            entry = await self._wait(limit)
            # The current time, not `now`: a connection handed over after a
            # wait was returned after `now` (validate="always" must ping it).
            due = state.needs_validation(entry, _monotonic())
        else:
            # Served by PoolState.acquire(), which found it not due at `now`.
            due = False
        if state.retired:
            # In the background: an interruption here must not strand `entry`.
            self._spawn_close_retired()
        if due or entry.unconfirmed or self._check is not None:
            if limit is None:
                limit = check_timeout_arg(timeout, self._timeout)
            entry = await self._validate(entry, limit, now, due)
        if self._config.leak_timeout is not None:
            entry.stack = capture_stack()
        if record_wait:
            with self._lock:
                state.obtained(_monotonic() - now)
        if self._events.checkout:
            self._emit_checkout(entry, now)
        return entry

    def _emit_checkout(self, entry: PoolEntry, started: float) -> None:
        """Tell the checkout listeners; take the connection back if one raises
        past the event bus (KeyboardInterrupt, a cancellation: the bus only
        swallows Exception), since the caller then never gets it."""
        try:
            self._emit("checkout", entry.conn, duration=_monotonic() - started)
        except BaseException:
            with self._lock:
                waiter = self._state.unlend(entry, _monotonic())
            if waiter is not None:
                waiter.signal.set()
            if self._state.retired:
                self._spawn_close_retired()
            raise

    async def release(self, conn: ConnT) -> None:
        """Give back a connection taken with :meth:`acquire`.

        An open transaction is rolled back, and logged at WARNING once per
        call site (:meth:`connection` commits instead). A broken connection
        is closed rather than kept.

        Raises:
            PoolError: ``conn`` is not checked out from this pool (for example,
                it was already released).
        """
        # The fast path of _return(), inlined (one Python call less per
        # cycle); AsyncConnectionContext.__aexit__ has the same lines.
        state = self._state
        entry = state.in_use.get(id(conn))
        if entry is not None and entry.conn is None and entry.ref() is conn:
            entry.conn = conn  # held weakly since acquire(): strongly again
        if entry is None or entry.conn is not conn:
            await self._return(conn, None)  # raises PoolError, or a closed one
            return
        idle = self._idle_value
        # `is not` first: the usual answer is the idle value itself (True),
        # and an identity test costs less than a generic compare.
        if self._reset is not None or (
            (answer := self._idle_probe(conn)) is not idle and answer != idle
        ):
            await self._return(conn, None, None, entry, True)
            return
        now = _monotonic()
        if self._events.checkin:
            await self._release_told(entry, conn, now)
            return
        waiter = state.release(entry, now, self._lock)
        if waiter is not None or state.retired:
            await self._after_checkin(waiter, False)


class AsyncConnectionContext(Generic[ConnT]):
    """What ``pool.connection()`` returns: borrows on enter, gives back on exit."""

    __slots__ = ("_conn", "_entry", "_pool", "_timeout")

    # Set by AsyncCheckout.connection() (no __init__: see there).
    _pool: AsyncCheckout[ConnT]
    _timeout: float | None
    # Set on enter: the exit needs no lookup (PoolState.release checks, under
    # the lock, that the entry is still lent).
    _conn: ConnT
    _entry: PoolEntry

    # __aenter__ and __aexit__ inline the fast paths of AsyncPool._acquire()
    # and AsyncPool.release() (keep them in step): a Python call less on each.

    if IS_ASYNC:

        def __enter__(self) -> NoReturn:
            needs_async_with(
                f"{type(self._pool).__name__}.connection()", "pool.connection() as conn"
            )

        def __exit__(self, *exc_info: object) -> None:
            return None

    async def __aenter__(self) -> ConnT:
        pool = self._pool
        # Nested, not `and`-ed: the generator drops a bare IS_ASYNC block.
        if IS_ASYNC:  # noqa: SIM102
            if current_loop() is not pool._loop:
                pool._check_loop()
        now = _monotonic()
        entry = pool._state.acquire(now, pool._lock)
        if entry is None or pool._watch_checkout:
            entry = await pool._acquire_slow(entry, now, self._timeout)
            conn: ConnT = entry.conn
        else:
            conn = entry.conn
            if pool._events.checkout:
                pool._emit_checkout(entry, now)
        self._conn = conn
        self._entry = entry
        return conn

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        pool = self._pool
        conn = self._conn
        entry = self._entry
        if exc is not None or entry.conn is not conn:
            # Roll back (exception) an open transaction; or a PoolError.
            await pool._return(conn, exc_type is None, exc, entry)
            return
        idle = pool._idle_value
        if pool._reset is not None or (
            (answer := pool._idle_probe(conn)) is not idle and answer != idle
        ):
            # Commit an open transaction (found by the probe: not probed again).
            await pool._return(conn, True, None, entry, True)
            return
        now = _monotonic()
        if pool._events.checkin:
            await pool._release_told(entry, conn, now)
            return
        state = pool._state
        waiter = state.release(entry, now, pool._lock)
        if waiter is not None or state.retired:
            await pool._after_checkin(waiter, False)
