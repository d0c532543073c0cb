"""PoolState: the sans-I/O brain shared by :class:`Pool` and :class:`AsyncPool`.

How it works. The state owns three collections:

* ``idle``: a stack of connections ready to hand out. Checkout pops the most
  recently returned one (LIFO), so a light load keeps reusing a few warm
  connections while the rest sit at the bottom of the stack, where the idle
  timeout finds them and shrinks the pool back to ``min_size``.
* ``in_use``: connections held by callers, keyed by ``id(conn)`` so that a
  returned driver connection finds its record in O(1).
* ``waiters``: callers that found no idle connection, in FIFO order. A
  connection coming back, or a new one finishing its connect, goes straight to
  the oldest waiter (direct hand-off, no barging), which keeps waiting fair.
  A hand-off only reserves the connection: the checkout (``acquires``, a use
  towards ``max_uses``) counts when the waiter takes it (:meth:`served`), so
  a waiter cancelled in between leaves no trace (:meth:`recall`).

Connects happen outside the state: :meth:`plan_connects` reserves slots
(``connecting``) for the shell to fill in the background; the shell reports
back with :meth:`connected` or :meth:`connect_failed`. While connects fail, one
connect worker at a time retries with exponential backoff and jitter.

Every method expects the shell's lock to be held and does no I/O. Connections
the state decides to close are appended to ``retired``; the shell takes them
with :meth:`take_retired` and closes them with the lock released.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from poolkeeper._config import PoolConfig
from poolkeeper._core.connect_errors import (
    ConnectFault,
    first_line,
    is_permanent,
    mask_error,
    raisable,
)
from poolkeeper._core.entry import PoolEntry, Waiter
from poolkeeper._core.policy import backoff_delay, expiry, query_stalled_for
from poolkeeper._core.stats import _MASK, PoolStats, StatsCopy, Summary
from poolkeeper._sites import holders
from poolkeeper.errors import PoolClosed, PoolError, PoolTimeout, TooManyWaiters

#: Seconds after a sign of trouble during which idle connections stay suspect.
#: A server ending many sessions at once (a restart, ``pg_terminate_backend``
#: of a whole application) ends them over some milliseconds, so a connection
#: that answers a ping right after the first failure may die a moment later.
SUSPECT_GRACE = 1.0

#: Most seconds a caller with ``timeout=0`` waits for the connect started for
#: it (the driver's own connect timeout normally ends the connect sooner).
CONNECT_WAIT_LIMIT = 30.0

#: Reasons a connection is closed, as counted in ``PoolStats.closed_by_reason``.
REASONS = (
    "lifetime",
    "idle",
    "uses",
    "broken",
    "check",
    "resize",
    "close",
    "error",
    "query_timeout",
    "cancelled",
    "leaked",
)

#: Reasons that say nothing about the server: closing for one of them does not
#: make the other idle connections suspect (see needs_validation).
_HARMLESS_REASONS = frozenset(
    {"lifetime", "idle", "uses", "resize", "close", "cancelled", "leaked"}
)


class PoolState:
    """All pool bookkeeping and decisions; see the module docstring."""

    def __init__(
        self,
        config: PoolConfig,
        name: str,
        rand: Callable[[], float] = random.random,
        secrets: Iterable[str] = (),
    ) -> None:
        self.config = config
        self.name = name
        self.rand = rand
        # Passwords to mask in the driver error text this state quotes (a
        # live collection: credential providers add to it).
        self.secrets = secrets
        self.min_size = config.min_size
        self.max_size = config.max_size
        self.max_uses = config.max_uses
        # True while connections in use exceed max_size (after a resize).
        self.size_limited = False
        self.idle: deque[PoolEntry] = deque()
        self.in_use: dict[int, PoolEntry] = {}
        self.waiters: deque[Waiter] = deque()
        self.connecting = 0
        self.closed = False
        self.retired: list[PoolEntry] = []
        self.failed_waiters: list[Waiter] = []
        # Reconnect state: consecutive failures and when the next try may start.
        self.connect_failures = 0
        self.next_connect_at = 0.0
        self.last_connect_error: BaseException | None = None
        # Connect errors that reach the caller (see _fail_waiters): whether
        # any connect ever succeeded (a refusal is permanent until then), and
        # the last connect error when it was permanent (None after a success).
        self.ever_connected = False
        self.permanent_error: BaseException | None = None
        # Validation: idle connections unused for `validate_window` seconds are
        # pinged on checkout (None: never); any connection last known good
        # before `suspect_before` is pinged too (set when one is found broken,
        # or when the process looks like it was frozen).
        self.validate_window: float | None = None
        self.suspect_before = -math.inf
        self.last_housekeep_at: float | None = None
        # Counters.
        self.acquires = 0
        # Checkouts taken back by a failed validation (the caller got another
        # connection, or none), and checkouts lent but still being validated;
        # reported acquires = acquires - both (see _reported_acquires).
        self.acquires_withdrawn = 0
        self.unconfirmed = 0
        self._acquires_reported = 0
        # The shell runs a check hook on every checkout (see _lend).
        self.check_on_checkout = False
        self.timeouts = 0
        self.rejections = 0
        self.leaks = 0
        self.query_timeouts = 0
        self.validations = 0
        self.created = 0
        self.connect_errors = 0
        self.closed_by_reason = dict.fromkeys(REASONS, 0)
        self.wait_time = Summary()
        self.usage_time = Summary()
        self.connect_time = Summary()

    # -- sizes -----------------------------------------------------------------

    @property
    def size(self) -> int:
        """Open connections (idle + in use)."""
        return len(self.idle) + len(self.in_use)

    def _total(self) -> int:
        return len(self.idle) + len(self.in_use) + self.connecting

    # -- checkout --------------------------------------------------------------

    def checkout(self, now: float) -> PoolEntry | None:
        """Take an idle connection for a caller, or return None if there is none.

        In fair mode there is never an idle connection while callers wait, so
        a new caller cannot overtake them.

        Idle connections past their lifetime are retired on the way.
        """
        entry = self._pop_idle(now)
        if entry is not None:
            self._lend(entry, now)
        return entry

    def checkout_for(self, waiter: Waiter, now: float) -> PoolEntry | None:
        """Reserve an idle connection for a nudged waiter (unfair mode), or
        return None if there is none; it counts once :meth:`served`."""
        entry = self._pop_idle(now)
        if entry is not None:
            waiter.entry = entry
            self._reserve(entry, now)
        return entry

    def _pop_idle(self, now: float) -> PoolEntry | None:
        idle = self.idle
        while idle:
            entry = idle.pop()
            if entry.expires_at > now:
                return entry
            self._retire(entry, "lifetime")
        return None

    # -- fast paths -------------------------------------------------------------
    #
    # acquire() and release() take the shell's lock themselves, unlike every
    # other method. With threads, a switch of the GIL while one thread holds the
    # lock makes the others queue on it, and each hand-off of the lock then
    # costs a thread switch: a convoy. CPython only switches threads at a
    # function entry, a loop's back edge or after a call, so these two methods
    # take the lock after their own entry and, in the common case, run under it
    # nothing but attribute, subscript and arithmetic operations; rare cases
    # call the general methods. The lock is taken with acquire()/release() in
    # try/finally rather than `with lock:`, which in CPython 3.11 costs about
    # twice as much (two special-method lookups and a bound-method call with
    # three arguments on exit); ``lock`` needs only acquire() and release().

    def acquire(self, now: float, lock: Any) -> PoolEntry | None:
        """Take, under ``lock``, the most recently returned idle connection if
        it can go out as is; otherwise return None and change nothing.

        "As is" means within its lifetime and not due a validation ping (see
        :meth:`needs_validation`). On None the shell takes the full path
        (:meth:`checkout`, waiting, validation).
        """
        lock.acquire()
        try:
            # Read under the lock: housekeeping may replace the deque.
            idle = self.idle
            if not idle:
                return None
            entry = idle[-1]
            window = self.validate_window
            if entry.expires_at <= now or (
                window is not None
                and (
                    now - entry.last_used_at >= window
                    or entry.checked_at < self.suspect_before + SUSPECT_GRACE
                )
            ):
                return None
            del idle[-1]
            entry.checked_out_at = now
            entry.leak_reported = False
            entry.uses += 1
            self.in_use[entry.key] = entry
            self.acquires += 1
            # A checkout served at once waited 0 s (Summary.add() inlined).
            wait = self.wait_time
            wait.count += 1
            wait._samples[wait._i & _MASK] = 0.0
            wait._i += 1
            if self.check_on_checkout:
                # The shell runs the check hook first (see _hold_if_due).
                entry.unconfirmed = True
                self.unconfirmed += 1
            return entry
        finally:
            lock.release()

    def release(self, entry: PoolEntry, now: float, lock: Any) -> Waiter | None:
        """:meth:`checkin` a healthy connection (no discard), taking ``lock``.

        Raises:
            PoolError: the connection is not currently lent by this pool.
        """
        key = entry.key
        in_use = self.in_use
        max_uses = self.max_uses
        lock.acquire()
        try:
            if (
                key not in in_use
                or in_use[key] is not entry
                or self.closed
                or entry.expires_at <= now
                or (max_uses is not None and entry.uses >= max_uses)
                or self.waiters
                or self.size_limited
            ):
                return self.checkin(entry, now)
            del in_use[key]
            entry.site = None
            # Summary.add() inlined (see the comment above).
            usage = self.usage_time
            held = now - entry.checked_out_at
            usage.count += 1
            usage.total += held
            if held > usage.max:
                usage.max = held
            usage._samples[usage._i & _MASK] = held
            usage._i += 1
            entry.last_used_at = now
            self.idle.append(entry)
            return None
        finally:
            lock.release()

    def _lend(self, entry: PoolEntry, now: float) -> None:
        self._reserve(entry, now)
        entry.uses += 1
        self.acquires += 1
        self._hold_if_due(entry, now)

    def _hold_if_due(self, entry: PoolEntry, now: float) -> None:
        # A checkout that the shell validates first is counted, but not
        # reported, until validated() confirms it (discard_checked_out()
        # withdraws it): counted and held in the same step, so the reported
        # figure never goes up and back down.
        if self.check_on_checkout or self.needs_validation(entry, now):
            entry.unconfirmed = True
            self.unconfirmed += 1

    def _reserve(self, entry: PoolEntry, now: float) -> None:
        entry.checked_out_at = now
        entry.leak_reported = False
        self.in_use[entry.key] = entry

    def enqueue(self, waiter: Waiter) -> None:
        """Queue a caller that found no idle connection.

        Raises:
            PoolClosed: the pool is closed.
            Exception: the last connect failed for good (bad password, unknown
                database, ...; see :meth:`connect_failed`), the pool is empty
                and backing off: a copy of that driver error, without a new
                attempt (a server that locks accounts is not hammered).
            TooManyWaiters: ``max_waiting`` callers are already waiting.
        """
        if self.closed:
            raise PoolClosed(f"pool {self.name!r} is closed", pool_name=self.name)
        error = self.permanent_error
        if (
            error is not None
            and not self.size
            and waiter.enqueued_at < (self.next_connect_at)
        ):
            raise raisable(error)
        limit = self.config.max_waiting
        if limit and len(self.waiters) >= limit:
            self.rejections += 1
            raise TooManyWaiters(
                f"pool {self.name!r} already has {len(self.waiters)} callers waiting "
                f"(max_waiting={limit}; size {self.size}/{self.max_size})",
                pool_name=self.name,
                waiting=len(self.waiters),
            )
        self.waiters.append(waiter)

    def wait_for_connect(self, waiter: Waiter, now: float) -> float:
        """Let a just queued caller with ``timeout=0`` wait for a connect.

        ``timeout=0`` means "an idle connection, or a new one if there is
        room, never queue": the caller may wait for a connect that is in
        flight for it (called after :meth:`plan_connects`), never for another
        caller's connection or a backoff. Returns the seconds it may wait (0:
        none). Such a waiter is failed by the next failed connect.
        """
        backing_off = self.connect_failures and now < self.next_connect_at
        if backing_off or self.connecting < len(self.waiters):
            return 0.0
        waiter.connect_only = True
        return CONNECT_WAIT_LIMIT

    def timeout_error(self, timeout: float) -> PoolTimeout:
        """The :class:`PoolTimeout` for a caller whose ``timeout`` ran out.

        Its message names the last connect error (first line, secrets
        masked) and its ``__cause__`` is that error, while connects fail.
        """
        message = (
            f"pool {self.name!r} timed out after {timeout:.1f} s waiting for a "
            f"connection (size {self.size}/{self.max_size}, "
            f"{len(self.waiters)} waiting)"
        )
        cause = self.last_connect_error
        if cause is not None:
            message += f"; last connect error: {first_line(cause, self.secrets)}"
        elif self.in_use and len(self.in_use) >= self.max_size:
            held = holders(entry.site for entry in self.in_use.values())
            if held:
                message += f"; {held}"
        error = PoolTimeout(
            message, pool_name=self.name, timeout=timeout, waiting=len(self.waiters)
        )
        error.__cause__ = cause
        error.__suppress_context__ = True
        return error

    def served(self, waiter: Waiter, now: float) -> None:
        """Count the checkout of a waiter that took the connection reserved
        for it (its wait is recorded by :meth:`obtained`)."""
        entry = waiter.entry
        if entry is not None:
            entry.uses += 1
            self.acquires += 1
            self._hold_if_due(entry, now)

    def obtained(self, waited: float) -> None:
        """Record how long a checkout off the fast path took to obtain its
        connection (queueing, connecting, validating): ``wait_time`` counts
        every checkout, those served at once with 0 s (see :meth:`acquire`)."""
        self.wait_time.add(waited)

    def unlend(self, entry: PoolEntry, now: float) -> Waiter | None:
        """Take back a checkout whose caller never got the connection (a
        checkout listener raised past the event bus); return the waiter it
        goes to, if any."""
        if self.in_use.get(entry.key) is not entry:
            return None
        self.withdraw(entry)
        entry.uses -= 1
        return self.recall(entry, now)

    def abandon(self, waiter: Waiter, *, timed_out: bool) -> PoolEntry | None:
        """Take back a waiter that stops waiting (timeout or cancellation).

        Returns the entry the waiter had been handed meanwhile, if any: the
        caller must give it back with :meth:`recall` (or take it with
        :meth:`served`, for a timeout that lost the race with a hand-off).
        """
        if waiter.entry is not None:
            return waiter.entry
        with contextlib.suppress(ValueError):  # already removed by close()
            self.waiters.remove(waiter)
        if timed_out and (
            waiter.error is None or isinstance(waiter.error, PoolTimeout)
        ):
            self.timeouts += 1
        return None

    # -- checkin ---------------------------------------------------------------

    def checkin(
        self,
        entry: PoolEntry,
        now: float,
        *,
        discard: bool = False,
        reason: str = "broken",
    ) -> Waiter | None:
        """Take back a connection from a caller.

        The connection is retired (closed pool, broken, lifetime or uses
        reached, pool above ``max_size`` after a resize) or handed to the
        oldest waiter, or put back on the idle stack. Returns the waiter to
        wake, if any.

        Raises:
            PoolError: the connection is not currently lent by this pool.
        """
        self._take_back(entry)
        self.usage_time.add(now - entry.checked_out_at)
        entry.last_used_at = now
        if entry.aborted:
            # Its socket was shut down by the query watchdog: never reused.
            self.suspect_before = now
            self._retire(entry, "query_timeout")
            return None
        if discard or self.closed:
            if discard and reason not in _HARMLESS_REASONS:
                # The server may have gone away: check older idle connections
                # before handing them out (see needs_validation).
                self.suspect_before = now
            self._retire(entry, "close" if self.closed and not discard else reason)
            return None
        return self._keep(entry, now)

    def shed(self, entry: PoolEntry, now: float, keep_idle: int | None) -> bool:
        """Take back a connection that its user closes itself instead of returning.

        For an integration that keeps fewer idle connections than it may open
        (SQLAlchemy's ``pool_size`` under ``max_overflow``): when no caller
        waits and the idle stack holds ``keep_idle`` connections, the
        connection leaves the pool (counted as closed, reason ``"idle"``) and
        True is returned; the caller must close it. Otherwise nothing changes
        and the caller gives it back as usual. ``keep_idle`` None: the caller
        has closed the connection already; it always leaves (reason
        ``"broken"``, without making its siblings suspect). The shell does
        not close a shed connection (its user does, exactly once).
        """
        if keep_idle is not None and (self.waiters or len(self.idle) < keep_idle):
            return False
        self._take_back(entry)
        self.usage_time.add(now - entry.checked_out_at)
        reason = "idle" if keep_idle is not None else "broken"
        entry.close_reason = reason
        self.closed_by_reason[reason] += 1
        return True

    def recall(self, entry: PoolEntry, now: float) -> Waiter | None:
        """Take back a connection handed to a waiter that stopped waiting
        (cancelled) before it took it.

        The hand-off was never counted (see :meth:`served`), and the
        connection was not used: no usage time, ``last_used_at`` kept.
        Otherwise as :meth:`checkin`: the connection goes to the next waiter,
        back on the idle stack, or retires. Returns the waiter to wake, if any.

        Raises:
            PoolError: the connection is not currently lent by this pool.
        """
        self._take_back(entry)
        if self.closed:
            self._retire(entry, "close")
            return None
        return self._keep(entry, now)

    def _take_back(self, entry: PoolEntry) -> None:
        if self.in_use.pop(entry.key, None) is not entry:
            raise PoolError(
                f"connection {entry.live_conn()!r} is not checked out from pool "
                f"{self.name!r} (released twice?)",
                pool_name=self.name,
            )
        entry.site = None

    def _keep(self, entry: PoolEntry, now: float) -> Waiter | None:
        """Place a healthy returned connection, unless a limit retires it."""
        if entry.expires_at <= now:
            self._retire(entry, "lifetime")
            return None
        max_uses = self.max_uses
        if max_uses is not None and entry.uses >= max_uses:
            self._retire(entry, "uses")
            return None
        if self._total() >= self.max_size:
            self._retire(entry, "resize")
            return None
        self.size_limited = False
        return self._place(entry, now)

    def _place(self, entry: PoolEntry, now: float) -> Waiter | None:
        if self.waiters:
            waiter = self.waiters.popleft()
            if self.config.fair:
                # Direct hand-off: the oldest waiter owns it before it wakes
                # (and the checkout counts when it takes it: served()).
                waiter.entry = entry
                self._reserve(entry, now)
                return waiter
            # Unfair mode: the connection goes back on the stack and the oldest
            # waiter is only nudged; whoever runs first (perhaps the caller that
            # just released it) takes it. Fewer thread switches, no ordering.
        else:
            waiter = None
        self.idle.append(entry)
        return waiter

    def next_to_nudge(self) -> Waiter | None:
        """In unfair mode, pick a waiter to wake if a connection sits idle.

        A nudged waiter that stops waiting (timeout, cancellation) must pass
        the nudge on, or the idle connection would wait for the next return.
        """
        if self.config.fair or not self.idle or not self.waiters:
            return None
        return self.waiters.popleft()

    def requeue(self, waiter: Waiter) -> None:
        """Put a nudged waiter that found nothing back at the head of the queue."""
        if self.closed:
            waiter.error = PoolClosed(
                f"pool {self.name!r} was closed while waiting", pool_name=self.name
            )
            return
        self.waiters.appendleft(waiter)

    def validation_timed_out(self) -> int:
        """Count a checkout that ran out of time validating; return the waiters."""
        self.timeouts += 1
        return len(self.waiters)

    def take_unreleased(self, entry: PoolEntry, now: float) -> bool:
        """Take back the slot of a connection its ``acquire()`` caller closed,
        or dropped, without :meth:`release`; return False if it is not lent.

        A connection that still exists (``entry.conn`` set: closed by its
        user) is retired for the shell to close; a dropped one is already
        gone. Either way it counts as ``"leaked"`` and in ``leaks``.
        """
        if self.in_use.get(entry.key) is not entry:
            return False
        del self.in_use[entry.key]
        self.usage_time.add(now - entry.checked_out_at)
        self.leaks += 1
        if entry.conn is not None:
            self._retire(entry, "leaked")
        else:
            entry.close_reason = "leaked"
            self.closed_by_reason["leaked"] += 1
        return True

    def discard_checked_out(self, entry: PoolEntry, reason: str, now: float) -> None:
        """Retire a connection that a caller holds and found bad (e.g. a failed check)."""
        if self.in_use.pop(entry.key, None) is entry:
            self.withdraw(entry)
            if reason not in _HARMLESS_REASONS:
                self.suspect_before = now
            self._retire(entry, "query_timeout" if entry.aborted else reason)

    def withdraw(self, entry: PoolEntry) -> None:
        """Take back the checkout of a connection the caller will not get
        (its validation failed or was interrupted); it stays lent, to the
        pool, until :meth:`discard_checked_out` or :meth:`give_back`."""
        self.acquires_withdrawn += 1
        if entry.unconfirmed:
            entry.unconfirmed = False
            self.unconfirmed -= 1

    def _retire(self, entry: PoolEntry, reason: str) -> None:
        entry.close_reason = reason
        self.closed_by_reason[reason] += 1
        self.retired.append(entry)

    def needs_validation(self, entry: PoolEntry, now: float) -> bool:
        """Tell whether a connection being checked out should be pinged first."""
        window = self.validate_window
        if window is None:
            return False
        return (
            now - entry.last_used_at >= window
            or entry.checked_at < self.suspect_before + SUSPECT_GRACE
        )

    def validated(self, entry: PoolEntry, now: float) -> None:
        """Record a successful validation (the checkout is now reported)."""
        entry.checked_at = now
        self.validations += 1
        if entry.unconfirmed:
            entry.unconfirmed = False
            self.unconfirmed -= 1

    def take_retired(self) -> list[PoolEntry]:
        """Hand the connections to close over to the shell."""
        retired, self.retired = self.retired, []
        return retired

    # -- growing ---------------------------------------------------------------

    def plan_connects(self, now: float) -> int:
        """Reserve and return how many connects the shell should start now.

        Demand is one connection per waiter not already covered by a connect
        in progress, or whatever brings the pool up to ``min_size``; supply is
        capped by ``max_size`` and by ``max_connecting`` in flight. After a
        failed connect only one worker retries (it keeps its slot and backs
        off), so an outage is probed gently, not hammered.
        """
        if self.closed:
            return 0
        total = self._total()
        want = max(len(self.waiters) - self.connecting, self.min_size - total)
        n = min(
            want, self.max_size - total, self.config.max_connecting - self.connecting
        )
        if n <= 0:
            return 0
        if self.connect_failures:
            if self.connecting:
                return 0
            n = 1
        self.connecting += n
        return n

    def connect_delay(self, now: float) -> float:
        """Seconds a connect worker should wait before its next attempt (backoff)."""
        return max(0.0, self.next_connect_at - now)

    def connected(self, conn: Any, now: float, took: float) -> Waiter | None:
        """Add a new connection; return the waiter it was handed to, if any."""
        self.connecting -= 1
        self.connect_failures = 0
        self.next_connect_at = 0.0
        # The outage is over: a later PoolTimeout (plain exhaustion) must not
        # be chained to an error from it.
        self.last_connect_error = None
        self.ever_connected = True
        self.permanent_error = None
        self.created += 1
        self.connect_time.add(took)
        cfg = self.config
        entry = PoolEntry(
            conn, now, expiry(now, cfg.max_lifetime, cfg.lifetime_jitter, self.rand)
        )
        if self.closed:
            self._retire(entry, "close")
            return None
        if self._total() >= self.max_size:  # shrunk by resize() meanwhile
            self._retire(entry, "resize")
            return None
        return self._place(entry, now)

    def connect_failed(
        self,
        error: BaseException,
        now: float,
        fault: ConnectFault = ConnectFault.TRANSIENT,
    ) -> bool:
        """Record a failed connect; return True if this worker should retry.

        ``fault`` is the driver adapter's reading of ``error``. The worker
        keeps its ``connecting`` slot when it retries; otherwise the slot is
        released here. Waiters that must hear about the error now are moved
        to :attr:`failed_waiters` for the shell to wake (see
        :meth:`_fail_waiters`). Any secret in ``error``'s text is masked.
        """
        # The driver's text may quote its connection string.
        mask_error(error, self.secrets)
        permanent = is_permanent(fault, ever_connected=self.ever_connected)
        self.permanent_error = error if permanent else None
        self.connect_errors += 1
        self.connect_failures += 1
        self.last_connect_error = error
        cfg = self.config
        self.next_connect_at = now + backoff_delay(
            self.connect_failures, cfg.reconnect_min, cfg.reconnect_max, self.rand
        )
        self._fail_waiters(error, permanent)
        demand = bool(self.waiters) or self._total() - 1 < self.min_size
        if self.closed or not demand or self.connecting > 1:
            self.connecting -= 1
            return False
        return True

    def reserve_connect(self) -> bool:
        """Reserve a connect slot for a caller that opens a connection itself.

        Only when no connection is idle and the pool has room; the caller
        then reports :meth:`connected` or :meth:`connect_cancelled`.
        """
        if self.closed or self.idle or self._total() >= self.max_size:
            return False
        self.connecting += 1
        return True

    def _fail_waiters(self, error: BaseException, permanent: bool) -> None:
        """Fail the waiters that no retry can serve within their timeout.

        On an empty pool, an error no retry can fix (bad password, unknown
        database or host, TLS refused, a rejected option, a refusal by a
        server never reached) fails every waiter with (a copy of) the driver's
        error. With connections in use, waiters keep waiting for one to come
        back. Callers with ``timeout=0`` waiting for this connect always
        fail: with the error itself, or a :class:`PoolTimeout` naming it.
        """
        keep: list[Waiter] = []
        for waiter in self.waiters:
            if permanent and (waiter.connect_only or not self.size):
                waiter.error = raisable(error)
            elif waiter.connect_only:
                waiter.error = self.timeout_error(0.0)
            else:
                keep.append(waiter)
                continue
            self.failed_waiters.append(waiter)
        if len(keep) != len(self.waiters):
            self.waiters = deque(keep)

    def connect_cancelled(self) -> None:
        """Release the slot of a connect worker that stopped without a result."""
        self.connecting -= 1

    # -- housekeeping ----------------------------------------------------------

    def housekeep(self, now: float) -> tuple[list[PoolEntry], list[PoolEntry]]:
        """Run one round of maintenance.

        Retires idle connections past their lifetime, or idle too long above
        ``min_size``; notices a freeze (the clock jumped well past the
        housekeeping interval) and marks every connection suspect.

        Returns:
            The idle connections due a keepalive ping (lent out: give them
            back with :meth:`give_back`), and the connections newly found held
            longer than ``leak_timeout``.
        """
        last, self.last_housekeep_at = self.last_housekeep_at, now
        if last is not None and now - last > 2 * self.housekeeping_interval() + 1.0:
            self.suspect_before = now
        self._retire_stale_idle(now)
        return self._due_keepalive(now), self._find_leaks(now)

    def _due_keepalive(self, now: float) -> list[PoolEntry]:
        keepalive = self.config.keepalive
        if keepalive is None or not self.idle:
            return []
        due = [
            e for e in self.idle if now - max(e.last_used_at, e.checked_at) >= keepalive
        ]
        if due:
            self.idle = deque(e for e in self.idle if e not in due)
            for entry in due:
                self.in_use[entry.key] = entry
                entry.checked_out_at = math.inf
                entry.lent_at = now
        return due

    def _find_leaks(self, now: float) -> list[PoolEntry]:
        limit = self.config.leak_timeout
        if limit is None:
            return []
        leaked = [
            e
            for e in self.in_use.values()
            if not e.leak_reported and now - e.checked_out_at >= limit
        ]
        for entry in leaked:
            entry.leak_reported = True
        self.leaks += len(leaked)
        return leaked

    def _retire_stale_idle(self, now: float) -> None:
        max_idle = self.config.max_idle
        keep: deque[PoolEntry] = deque()
        # Oldest-returned first: the bottom of the stack.
        excess = self.size - self.min_size
        for entry in self.idle:
            if entry.expires_at <= now:
                self._retire(entry, "lifetime")
                excess -= 1
            elif (
                max_idle is not None
                and excess > 0
                and now - entry.last_used_at >= max_idle
            ):
                self._retire(entry, "idle")
                excess -= 1
            else:
                keep.append(entry)
        self.idle = keep

    def housekeeping_interval(self) -> float:
        """Seconds between housekeeping runs: often enough to honour the shortest limit."""
        cfg = self.config
        limits = [
            x
            for x in (cfg.max_idle, cfg.max_lifetime, cfg.keepalive, cfg.leak_timeout)
            if x is not None
        ]
        shortest = min(limits, default=60.0)
        interval = min(max(shortest / 4.0, 0.01), 5.0)
        if cfg.query_timeout is not None:
            # The query watchdog acts at most one interval after the limit.
            interval = min(interval, max(min(cfg.query_timeout / 4.0, 0.25), 0.01))
        return interval

    def resize(self, min_size: int | None, max_size: int | None) -> None:
        """Change the sizes; excess idle connections retire at once, busy ones on return."""
        new_min = self.min_size if min_size is None else min_size
        new_max = self.max_size if max_size is None else max_size
        PoolConfig(min_size=new_min, max_size=new_max)  # validates, raises ConfigError
        self.min_size, self.max_size = new_min, new_max
        while self.idle and self._total() > self.max_size:
            self._retire(self.idle.popleft(), "resize")
        # Connections in use beyond the new max_size retire when they return.
        self.size_limited = self._total() > self.max_size

    def close(self) -> list[Waiter]:
        """Close the state: retire idle connections, fail every waiter; return them to wake."""
        self.closed = True
        while self.idle:
            self._retire(self.idle.popleft(), "close")
        waiters = list(self.waiters)
        self.waiters.clear()
        for waiter in waiters:
            waiter.error = PoolClosed(
                f"pool {self.name!r} was closed while waiting", pool_name=self.name
            )
        return waiters

    # -- query watchdog (query_timeout) ----------------------------------------
    #
    # Each housekeeping round the shell takes the connections lent out
    # (query_suspects), asks the driver about each with the lock released
    # (is a command in progress? how long has the socket been quiet?), and
    # reports back (judge_query). A connection stuck for query_timeout is
    # marked aborted; the shell then shuts its socket down, which makes the
    # holder's blocked call fail, and the connection is retired when it comes
    # back ("query_timeout"), never reused.

    def query_suspects(self, now: float) -> list[tuple[PoolEntry, float]]:
        """Return the lent-out connections to probe, with the instant they were lent."""
        if self.config.query_timeout is None:
            return []
        return [(e, _lent_at(e)) for e in self.in_use.values() if not e.aborted]

    def judge_query(
        self,
        entry: PoolEntry,
        lent_at: float,
        busy: bool | None,
        quiet: float | None,
        now: float,
    ) -> float | None:
        """Record a probe of a suspect; return how long it is stuck if it must be aborted.

        The entry is then marked aborted (it retires when it comes back) and
        counted in ``query_timeouts``. Returns None, changing nothing, if the
        connection came back or was lent again since :meth:`query_suspects`.
        """
        limit = self.config.query_timeout
        if (
            limit is None
            or self.in_use.get(entry.key) is not entry
            or entry.aborted
            or _lent_at(entry) != lent_at
        ):
            return None
        if busy is False:
            entry.busy_since = None
        elif busy and (entry.busy_since is None or entry.busy_since < lent_at):
            entry.busy_since = now
        stalled = query_stalled_for(
            busy=busy,
            quiet=quiet,
            busy_since=entry.busy_since,
            held=now - lent_at,
            now=now,
        )
        if stalled < limit:
            return None
        entry.aborted = True
        # release()'s fast path then takes checkin(), which retires it.
        entry.expires_at = -math.inf
        self.query_timeouts += 1
        return stalled

    def take_idle(
        self, *, suspects_only: bool = False, now: float = math.inf
    ) -> list[PoolEntry]:
        """Lend out idle connections for a check: all, or those last known good
        before the latest sign of trouble ended (``suspect_before`` plus
        :data:`SUSPECT_GRACE`). ``now`` is when they are lent, for the query
        watchdog."""
        if suspects_only:
            limit = self.suspect_before + SUSPECT_GRACE
            entries = [e for e in self.idle if e.checked_at < limit]
            if entries:
                self.idle = deque(e for e in self.idle if e.checked_at >= limit)
        else:
            entries = list(self.idle)
            self.idle.clear()
        for entry in entries:
            self.in_use[entry.key] = entry
            entry.checked_out_at = math.inf  # not a user checkout: no usage sample
            entry.lent_at = now
        return entries

    def reclaim(self, entry: PoolEntry, now: float) -> None:
        """Take a connection over from a caller that was interrupted holding it.

        The pool then holds it (under a key no driver connection has, so the
        caller can no longer release it) until :meth:`give_back`, once the
        shell knows whether it can be reused.
        """
        if self.in_use.get(entry.key) is entry:
            del self.in_use[entry.key]
            self.usage_time.add(now - entry.checked_out_at)
        entry.key = ~id(entry)  # negative: never the id() of a connection
        entry.checked_out_at = math.inf
        entry.lent_at = now
        self.in_use[entry.key] = entry

    def give_back(
        self, entry: PoolEntry, now: float, *, ok: bool, reason: str = "check"
    ) -> Waiter | None:
        """Return an entry taken with :meth:`take_idle` or for a keepalive, once
        pinged, or one :meth:`reclaim`-ed from a caller once recovered;
        ``reason``: why it is closed if not ``ok``."""
        self.in_use.pop(entry.key, None)
        entry.key = id(entry.conn)
        if entry.aborted:
            self.suspect_before = now
            self._retire(entry, "query_timeout")
            return None
        if not ok or self.closed:
            if not ok and reason not in _HARMLESS_REASONS:
                self.suspect_before = now
            self._retire(entry, reason if not ok else "close")
            return None
        entry.checked_at = now
        return self._place(entry, now)

    # -- stats -----------------------------------------------------------------

    def stats(self) -> PoolStats:
        """Return a snapshot of gauges, counters and time summaries."""
        return self.stats_copy().build()

    def _reported_acquires(self) -> int:
        """Checkouts callers really got, never less than the last figure reported.

        A checkout whose validation fails is withdrawn and retried, so the
        exact figure can dip for a moment (lent, withdrawn, lent again). A
        counter must never go down, since Prometheus reads a drop as a restart
        and counts the whole value again: the figure stays at its last
        reported value until the retry is counted.
        """
        value = self.acquires - self.acquires_withdrawn - self.unconfirmed
        if value < self._acquires_reported:
            return self._acquires_reported
        self._acquires_reported = value
        return value

    def stats_copy(self) -> StatsCopy:
        """Copy what :meth:`stats` reports, leaving the sorting for later.

        The shells call this under their lock and :meth:`StatsCopy.build`
        after releasing it.
        """
        # A connection the pool itself holds for a moment (a keepalive or
        # suspect ping, a recovery after a cancelled caller) is not lent to
        # anyone: it counts as idle, so ``in_use`` is what callers hold.
        held = sum(1 for e in self.in_use.values() if e.checked_out_at == math.inf)
        return StatsCopy(
            {
                "name": self.name,
                "size": len(self.idle) + len(self.in_use),
                "idle": len(self.idle) + held,
                "in_use": len(self.in_use) - held,
                "waiting": len(self.waiters),
                "connecting": self.connecting,
                "min_size": self.min_size,
                "max_size": self.max_size,
                "acquires": self._reported_acquires(),
                "timeouts": self.timeouts,
                "rejections": self.rejections,
                "leaks": self.leaks,
                "query_timeouts": self.query_timeouts,
                "validations": self.validations,
                "connections_created": self.created,
                "connect_errors": self.connect_errors,
                "closed_by_reason": dict(self.closed_by_reason),
            },
            self.wait_time.copy(),
            self.usage_time.copy(),
            self.connect_time.copy(),
        )


def _lent_at(entry: PoolEntry) -> float:
    """When a lent-out entry was lent: to a caller, or to the pool for a ping."""
    at = entry.checked_out_at
    return at if at != math.inf else entry.lent_at
