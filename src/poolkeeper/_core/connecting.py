"""ConnectState: growing the pool, and reacting to connect failures.

Owns: how many connects the shell starts (demand from waiters and
``min_size``, capped by ``max_size`` and ``max_connecting``), the reconnect
pacing (a short fixed interval after fast failures while callers wait,
exponential backoff otherwise; see :meth:`ConnectState.connect_failed`),
placing a new connection, and which waiters a failed connect fails (with the
driver's error, or a :class:`~poolkeeper.errors.PoolTimeout`).

May not touch: the connect itself (the shell runs the driver), checkout
(``checkout``), maintenance (``upkeep``); no I/O, clock or lock.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

from poolkeeper._core.connect_errors import (
    ConnectFault,
    is_permanent,
    mask_error,
    raisable,
)
from poolkeeper._core.entry import PoolEntry, Waiter
from poolkeeper._core.policy import FAST_FAILURE, expiry, retry_delay
from poolkeeper._core.upkeep import UpkeepState
from poolkeeper._hoststate import Reached

#: Seconds between the WARNINGs of connect failures retried on the fast interval.
FAST_RETRY_LOG_EVERY = 5.0


class ConnectState(UpkeepState):
    """Connect planning and backoff; see the module docstring."""

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
        want = max(self.waiting() - self.connecting, self.min_size - total)
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

    def connected(
        self, conn: Any, now: float, took: float, reached: Reached | None = None
    ) -> Waiter | None:
        """Add a new connection; return the waiter it was handed to, if any.

        ``reached``: the server it reached and the role it reported (recorded
        in :attr:`hosts` when the pool keeps them).
        """
        self.connecting -= 1
        self.connect_failures = 0
        self.slow_failures = 0
        self.next_connect_at = 0.0
        self.last_failure_fast = False
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
        if reached is not None and self.hosts is not None:
            entry.host = self.hosts.connected(reached)
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
        took: float = math.inf,
    ) -> bool:
        """Record a failed connect; return True if this worker should retry.

        ``fault`` is the driver adapter's reading of ``error``, ``took`` how
        long the attempt lasted. The worker keeps its ``connecting`` slot
        when it retries; otherwise the slot is released here. Waiters that
        must hear about the error now are moved to :attr:`failed_waiters`
        for the shell to wake (see :meth:`_fail_waiters`). Any secret in
        ``error``'s text is masked.

        Pacing (:func:`~poolkeeper._core.policy.retry_delay`): an attempt
        that failed fast (refused, or in under
        :data:`~poolkeeper._core.policy.FAST_FAILURE` seconds with an error
        a retry may fix that is not "too many connections": a reset,
        "starting up") is retried after ``reconnect_fast_interval`` while
        callers wait, so they get the server within that interval of its
        return; anything else (timeouts, a full server, no caller waiting)
        backs off exponentially up to ``reconnect_max``.
        """
        # The driver's text may quote its connection string.
        mask_error(error, self.secrets)
        permanent = is_permanent(fault, ever_connected=self.ever_connected)
        self.permanent_error = error if permanent else None
        self.connect_errors += 1
        self.connect_failures += 1
        self.last_connect_error = error
        self.last_failed_at = now
        self.last_failure_fast = not permanent and (
            fault is ConnectFault.REFUSED
            or (fault is not ConnectFault.BUSY and took < FAST_FAILURE)
        )
        if not self.last_failure_fast:
            self.slow_failures += 1
        self._fail_waiters(error, permanent)
        self.next_connect_at = now + self._retry_delay()
        demand = bool(self.waiters) or self._total() - 1 < self.min_size
        if self.closed or not demand or self.connecting > 1:
            self.connecting -= 1
            return False
        return True

    def hurry_reconnect(self) -> bool:
        """Bring a backed-off retry forward for a caller that just queued.

        After a fast failure (see :meth:`connect_failed`) the next attempt is
        due ``reconnect_fast_interval`` after it, not at the end of a backoff
        grown while nobody waited. Returns whether the retry moved earlier
        (the shell then wakes the sleeping connect worker).
        """
        if not (self.connect_failures and self._fast_retry()):
            return False
        due = self.last_failed_at + self._retry_delay()
        if due >= self.next_connect_at:
            return False
        self.next_connect_at = due
        return True

    def log_connect_failure(self, now: float) -> bool:
        """Tell whether the connect failure just recorded deserves a WARNING.

        Every failure does, except those retried on the fast interval: of
        those (up to ~20 a second), one per :data:`FAST_RETRY_LOG_EVERY`
        seconds; the others are logged at DEBUG.
        """
        if (
            self.connect_failures > 1
            and self._fast_retry()
            and now - self.last_warned_at < FAST_RETRY_LOG_EVERY
        ):
            return False
        self.last_warned_at = now
        return True

    def _fast_retry(self) -> bool:
        """Whether the next retry is paced by ``reconnect_fast_interval``."""
        return (
            self.last_failure_fast
            and bool(self.waiters)
            and self.config.reconnect_fast_interval is not None
        )

    def _retry_delay(self) -> float:
        cfg = self.config
        return retry_delay(
            failures=self.connect_failures,
            slow_failures=self.slow_failures,
            fast=self.last_failure_fast,
            waiting=bool(self.waiters),
            base=cfg.reconnect_min,
            cap=cfg.reconnect_max,
            fast_interval=cfg.reconnect_fast_interval,
            rand=self.rand,
        )

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
            if not waiter.queued:
                continue  # stopped waiting (see unqueue)
            if permanent and (waiter.connect_only or not self.size):
                waiter.error = raisable(error)
            elif waiter.connect_only:
                waiter.error = self.timeout_error(0.0)
            else:
                keep.append(waiter)
                continue
            waiter.queued = False
            self.failed_waiters.append(waiter)
        if len(keep) != len(self.waiters):
            self.waiters = deque(keep)
            self.abandoned = 0

    def connect_cancelled(self) -> None:
        """Release the slot of a connect worker that stopped without a result."""
        self.connecting -= 1
