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
"

Where the code lives. :class:`PoolState` is assembled from one class per
concern, each in its own module, stacked in one line of single inheritance on
top of :class:`~poolkeeper._core.base.StateBase` (the fields and the shared
steps; a compiled build's native classes allow one base each):
:mod:`~poolkeeper._core.checkout` (checkout, checkin, the hot path),
:mod:`~poolkeeper._core.connecting` (connect planning, backoff, connect
failures) and :mod:`~poolkeeper._core.upkeep` (housekeeping, resize, close,
the query watchdog). This module owns only the assembly and the stats
snapshot.

May not touch: any I/O, clock, lock, thread or event loop, and nothing above
``_core`` except the options (``PoolConfig``), the errors and
``_sites`` (call-site summaries).
"""

from __future__ import annotations

import math

from poolkeeper._core.base import CONNECT_WAIT_LIMIT, REASONS, SUSPECT_GRACE
from poolkeeper._core.checkout import CheckoutState
from poolkeeper._core.stats import PoolStats, StatsCopy

__all__ = ["CONNECT_WAIT_LIMIT", "REASONS", "SUSPECT_GRACE", "PoolState"]


class PoolState(CheckoutState):
    """All pool bookkeeping and decisions; see the module docstring."""

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
                "waiting": self.waiting(),
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
                "connections_by_host": (
                    self.hosts.connections_by_host() if self.hosts is not None else {}
                ),
            },
            self.wait_time.copy(),
            self.usage_time.copy(),
            self.connect_time.copy(),
        )
