"""ConnectState: growing the pool, and reacting to connect failures.

Owns: how many connects the shell starts (demand from waiters and
``min_size``, capped by ``max_size`` and ``max_connecting``), the reconnect
backoff, placing a new connection, and which waiters a failed connect fails
(with the driver's error, or a :class:`~poolkeeper.errors.PoolTimeout`).

May not touch: the connect itself (the shell runs the driver), checkout
(``checkout``), maintenance (``upkeep``); no I/O, clock or lock.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from poolkeeper._core.connect_errors import (
    ConnectFault,
    is_permanent,
    mask_error,
    raisable,
)
from poolkeeper._core.entry import PoolEntry, Waiter
from poolkeeper._core.policy import backoff_delay, expiry
from poolkeeper._core.upkeep import UpkeepState


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
