"""CheckoutState: lending a connection to a caller and taking it back.

Owns: the hot path (:meth:`CheckoutState.acquire` and
:meth:`CheckoutState.release`, which take the shell's lock themselves), the
general checkout (idle stack, waiter queue, hand-off, unfair-mode nudges,
timeouts and cancellations) and checkin (retire or keep), and the bookkeeping
of a checkout validated before the caller gets it.

May not touch: connecting (``connecting``), maintenance (``upkeep``), stats
snapshots (``state``); any I/O, clock or lock other than the one ``acquire``
and ``release`` are handed. The hot path calls nothing on its common branch:
keep it that way (see the comment above ``acquire``).
"""

from __future__ import annotations

from typing import Any

from poolkeeper._core.base import (
    _HARMLESS_REASONS,
    CONNECT_WAIT_LIMIT,
)
from poolkeeper._core.connect_errors import raisable
from poolkeeper._core.connecting import ConnectState
from poolkeeper._core.entry import PoolEntry, Waiter
from poolkeeper._core.stats import _MASK
from poolkeeper.errors import PoolClosed, PoolTimeout, TooManyWaiters


# The concerns stack in one line (CheckoutState, ConnectState, UpkeepState,
# StateBase: the method resolution order three mixins gave): the compiled
# build's native classes take a single base each (docs/ARCHITECTURE.md).
class CheckoutState(ConnectState):
    """Checkout and checkin; see the module docstring."""

    def checkout(self, now: float) -> PoolEntry | None:
        """Take an idle connection for a caller, or return None if there is none.

        In fair mode there is never an idle connection while callers wait, so
        a new caller cannot overtake them (in "bounded" mode only one on its
        way to a nudged waiter, who can be overtaken once).

        Idle connections past their lifetime are retired on the way.
        """
        entry = self._pop_idle(now)
        if entry is not None:
            self._lend(entry, now)
        return entry

    def checkout_for(self, waiter: Waiter, now: float) -> PoolEntry | None:
        """Reserve an idle connection for a nudged waiter (not fair mode), or
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
            if (
                entry.expires_at <= now
                or entry.checked_at < self.recheck_before
                or (window is not None and now - entry.last_used_at >= window)
            ):
                return None
            # pop(), not `del idle[-1]`: a deque deletes by index with two
            # rotations.
            idle.pop()
            entry.checked_out_at = now
            entry.leak_reported = False
            entry.uses += 1
            self.in_use[entry.key] = entry
            self.acquires += 1
            # A checkout served at once waited 0 s: one counter, turned into
            # samples when the summary is next read or added to.
            self.wait_time.zeros += 1
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
        if limit and self.waiting() >= limit:
            self.rejections += 1
            raise TooManyWaiters(
                f"pool {self.name!r} already has {self.waiting()} callers waiting "
                f"(max_waiting={limit}; size {self.size}/{self.max_size})",
                pool_name=self.name,
                waiting=self.waiting(),
            )
        waiter.queued = True
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
        if backing_off or self.connecting < self.waiting():
            return 0.0
        waiter.connect_only = True
        return CONNECT_WAIT_LIMIT

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
        self.unqueue(waiter)
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
            self._trouble(entry, now)
            self._retire(entry, "query_timeout")
            return None
        if discard or self.closed:
            if discard and reason not in _HARMLESS_REASONS:
                # The server may have gone away: check older idle connections
                # before handing them out (see needs_validation).
                self._trouble(entry, now)
            self._retire(entry, "close" if self.closed and not discard else reason)
            return None
        return self._keep(entry, now)

    def shed(
        self,
        entry: PoolEntry,
        now: float,
        keep_idle: int | None,
        reason: str | None = None,
    ) -> bool:
        """Take back a connection that its user closes itself instead of returning.

        For an integration that keeps fewer idle connections than it may open
        (SQLAlchemy's ``pool_size`` under ``max_overflow``): when no caller
        waits and the idle stack holds ``keep_idle`` connections, the
        connection leaves the pool (counted as closed, reason ``"idle"``) and
        True is returned; the caller must close it. Otherwise nothing changes
        and the caller gives it back as usual. ``keep_idle`` None: the caller
        has closed the connection already; it always leaves (reason
        ``"broken"``, without making its siblings suspect), or ``reason``
        (``"detached"``: SQLAlchemy's ``detach()``, its user keeps it open).
        The shell does not close a shed connection (its user does, exactly
        once).
        """
        if keep_idle is not None and (self.waiters or len(self.idle) < keep_idle):
            return False
        self._take_back(entry)
        self.usage_time.add(now - entry.checked_out_at)
        if reason is None:
            reason = "idle" if keep_idle is not None else "broken"
        entry.close_reason = reason
        self.closed_by_reason[reason] += 1
        self._forget_host(entry)
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

    def next_to_nudge(self) -> Waiter | None:
        """Outside fair mode, pick a waiter to wake if a connection sits idle.

        A nudged waiter that stops waiting (timeout, cancellation) must pass
        the nudge on, or the idle connection would wait for the next return.
        """
        if self.config.fair is True or not self.idle or not self.waiters:
            return None
        return self.pop_waiter()

    def requeue(self, waiter: Waiter) -> None:
        """Put a nudged waiter that found nothing back at the head of the queue
        (in "bounded" mode it is served by direct hand-off from then on).

        Among the waiters requeued so, the oldest stays first: two nudged
        waiters that both find nothing keep their order.
        """
        if self.closed:
            waiter.error = PoolClosed(
                f"pool {self.name!r} was closed while waiting", pool_name=self.name
            )
            return
        waiter.queued = True
        waiter.overtaken = True
        waiters = self.waiters
        # Only requeued waiters are ever ahead of it, a few at most.
        i = 0
        n = len(waiters)
        while (
            i < n
            and waiters[i].overtaken
            and waiters[i].enqueued_at <= waiter.enqueued_at
        ):
            i += 1
        waiters.insert(i, waiter)

    def validation_timed_out(self) -> int:
        """Count a checkout that ran out of time validating; return the waiters."""
        self.timeouts += 1
        return self.waiting()

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
            self._forget_host(entry)
        return True

    def discard_checked_out(self, entry: PoolEntry, reason: str, now: float) -> None:
        """Retire a connection that a caller holds and found bad (e.g. a failed check)."""
        if self.in_use.pop(entry.key, None) is entry:
            self.withdraw(entry)
            if reason not in _HARMLESS_REASONS:
                self._trouble(entry, now)
            elif reason == "role_changed":
                # Its server changed role: check its siblings' roles too.
                self.suspect_host(entry, now)
            self._retire(entry, "query_timeout" if entry.aborted else reason)

    def validated(self, entry: PoolEntry, now: float) -> None:
        """Record a successful validation (the checkout is now reported)."""
        entry.checked_at = now
        self.validations += 1
        if entry.unconfirmed:
            entry.unconfirmed = False
            self.unconfirmed -= 1
