"""StateBase: the pool's bookkeeping fields and the steps every concern shares.

Owns: the fields of :class:`~poolkeeper._core.state.PoolState` (idle stack,
lent-out map, waiter queue, counters, reconnect and validation state), the
constants that name close reasons, and the small steps that several concerns
take: reserving a connection for a caller, placing a returned or new one
(hand-off to the oldest waiter, or back on the idle stack), retiring one, the
validation rule, the timeout error.

May not touch: any I/O, clock, lock, thread or event loop (the shell passes
``now`` in and holds the lock); the concern modules built on it
(``checkout``, ``connecting``, ``upkeep``, ``state``) are never imported here.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable, Iterable

from poolkeeper._config import PoolConfig
from poolkeeper._core.connect_errors import first_line
from poolkeeper._core.entry import PoolEntry, Waiter
from poolkeeper._core.stats import Summary
from poolkeeper._hoststate import HostTable
from poolkeeper._sites import holders
from poolkeeper.errors import PoolError, PoolTimeout

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
    "role_changed",
    "detached",
)

#: Reasons that say nothing about the server: closing for one of them does not
#: make the other idle connections suspect (see needs_validation).
_HARMLESS_REASONS = frozenset(
    {
        "lifetime",
        "idle",
        "uses",
        "resize",
        "close",
        "cancelled",
        "leaked",
        "role_changed",
        "detached",
    }
)


class StateBase:
    """Fields and shared steps of :class:`~poolkeeper._core.state.PoolState`."""

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
        self.waiters: deque[Waiter] = deque()  # FIFO; both ends always queued
        self.abandoned = 0  # waiters in it that stopped waiting (see unqueue())
        self.connecting = 0
        self.closed = False
        self.retired: list[PoolEntry] = []
        self.failed_waiters: list[Waiter] = []
        # Reconnect state: consecutive failures and when the next try may start.
        self.connect_failures = 0
        # Of those, the ones that failed slowly (see ConnectState.connect_failed).
        self.slow_failures = 0
        self.next_connect_at = 0.0
        # When the last connect failed, and whether it failed fast (see
        # ConnectState.connect_failed): a caller arriving after a fast
        # failure brings the next attempt forward (hurry_reconnect).
        self.last_failed_at = -math.inf
        self.last_failure_fast = False
        self.last_warned_at = -math.inf
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
        # The fast checkout's one test for every kind of suspicion: a
        # connection last known good before this instant takes the slow path
        # (see suspect_all and suspect_host); needs_validation says what for.
        self.recheck_before = -math.inf
        # Per-host state, the role connections must keep (target_session_attrs)
        # and, with role_check_interval, when every host next turns suspect;
        # set by the shell when the driver can tell hosts and roles.
        self.hosts: HostTable | None = None
        self.want_role, self.next_role_round = "any", math.inf
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

    # -- shared steps ---------------------------------------------------------

    def _hold_if_due(self, entry: PoolEntry, now: float) -> None:
        # A checkout that the shell validates first is counted, but not
        # reported, until validated() confirms it (discard_checked_out()
        # withdraws it): counted and held in the same step, so the reported
        # figure never goes up and back down.
        if self.check_on_checkout or self.needs_validation(entry, now):
            entry.unconfirmed = True
            self.unconfirmed += 1
        elif entry.checked_at < self.recheck_before:
            # Sent off the fast path by a suspicion that does not concern it
            # (another host's): cleared, so its next checkout is fast again.
            entry.checked_at = min(self.recheck_before, now)

    def _reserve(self, entry: PoolEntry, now: float) -> None:
        entry.checked_out_at = now
        entry.leak_reported = False
        self.in_use[entry.key] = entry

    def timeout_error(self, timeout: float) -> PoolTimeout:
        """The :class:`PoolTimeout` for a caller whose ``timeout`` ran out.

        Its message names the last connect error (first line, secrets
        masked) and its ``__cause__`` is that error, while connects fail.
        Call it under the shell's lock (it reads the connections in use).
        """
        message = (
            f"pool {self.name!r} timed out after {timeout:.1f} s waiting for a "
            f"connection (size {self.size}/{self.max_size}, "
            f"{self.waiting()} waiting)"
        )
        cause = self.last_connect_error
        if cause is not None:
            message += f"; last connect error: {first_line(cause, self.secrets)}"
        elif self.in_use and len(self.in_use) >= self.max_size:
            held = holders(entry.site for entry in self.in_use.values())
            if held:
                message += f"; {held}"
        error = PoolTimeout(
            message, pool_name=self.name, timeout=timeout, waiting=self.waiting()
        )
        error.__cause__ = cause
        error.__suppress_context__ = True
        return error

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
            waiter = self.pop_waiter()
            fair = self.config.fair
            if fair is True or (fair and waiter.overtaken):
                # Direct hand-off: the oldest waiter owns it before it wakes
                # (and the checkout counts when it takes it: served()).
                waiter.entry = entry
                self._reserve(entry, now)
                return waiter
            # Unfair mode, or "bounded" for a waiter not yet overtaken: the
            # connection goes back on the stack and the oldest waiter is only
            # nudged; whoever runs first (perhaps the caller that just
            # released it) takes it. A nudged waiter that finds nothing goes
            # back to the head of the queue (requeue()), in "bounded" mode
            # for a direct hand-off next time.
        else:
            waiter = None
        self.idle.append(entry)
        return waiter

    # -- the waiter queue ---------------------------------------------------------

    def waiting(self) -> int:
        """How many callers are waiting."""
        return len(self.waiters) - self.abandoned

    def pop_waiter(self) -> Waiter:
        """Take the oldest waiter off the queue (which must not be empty)."""
        waiter = self.waiters.popleft()
        waiter.queued = False
        if self.abandoned:
            self._trim_waiters()
        return waiter

    def unqueue(self, waiter: Waiter) -> None:
        """Take a waiter that stops waiting off the queue, in O(1).

        One at either end of the queue leaves it at once; one in the middle
        stays, no longer ``queued``, until it reaches an end or the queue is
        compacted (when such waiters outnumber the live ones).
        """
        if not waiter.queued:
            return  # already taken off (served, nudged, failed or closed)
        waiter.queued = False
        waiters = self.waiters
        if waiters[0] is waiter:
            waiters.popleft()
        elif waiters[-1] is waiter:
            waiters.pop()
        else:
            self.abandoned += 1
            if self.abandoned > 16 and 2 * self.abandoned > len(waiters):
                self.waiters = deque(w for w in waiters if w.queued)
                self.abandoned = 0
            return
        if self.abandoned:
            self._trim_waiters()

    def _trim_waiters(self) -> None:
        # Restore the invariant: both ends of the queue are waiting.
        waiters = self.waiters
        while waiters and not waiters[0].queued:
            waiters.popleft()
            self.abandoned -= 1
        while waiters and not waiters[-1].queued:
            waiters.pop()
            self.abandoned -= 1

    def take_waiters(self) -> list[Waiter]:
        """Empty the queue; return the waiters that were waiting, oldest first."""
        waiters = [w for w in self.waiters if w.queued]
        for waiter in waiters:
            waiter.queued = False
        self.waiters = deque()
        self.abandoned = 0
        return waiters

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
        self._forget_host(entry)

    def _forget_host(self, entry: PoolEntry) -> None:
        host = entry.host
        if host is not None:
            entry.host = None
            if host.connections > 0:
                host.connections -= 1

    def suspect_all(self, now: float) -> None:
        """A sign of trouble at ``now``: ping connections last known good
        before it (for :data:`SUSPECT_GRACE` more seconds) before lending them."""
        self.suspect_before = now
        if self.validate_window is not None:
            self.recheck_before = max(self.recheck_before, now + SUSPECT_GRACE)

    def _trouble(self, entry: PoolEntry, now: float) -> None:
        """``entry`` broke at ``now``: suspect every connection, and its host's role."""
        self.suspect_all(now)
        self.suspect_host(entry, now)

    def suspect_host(self, entry: PoolEntry, now: float) -> None:
        """Make ``entry``'s host suspect at ``now`` (it broke, or its server
        answered "read-only", "shutting down"): its other connections have
        their role checked before they are lent (see :meth:`needs_role_check`)."""
        host = entry.host
        if host is not None:
            host.suspect_before = now
            self.recheck_before = max(self.recheck_before, now)

    def needs_role_check(self, entry: PoolEntry) -> bool:
        """Tell whether ``entry``'s role must be read before it is lent: its
        host turned suspect since it was last known good."""
        host = entry.host
        return host is not None and entry.checked_at < host.suspect_before

    def needs_validation(self, entry: PoolEntry, now: float) -> bool:
        """Tell whether a connection being checked out should be pinged first
        (or have its role checked, which is a ping too)."""
        host = entry.host
        if host is not None and entry.checked_at < host.suspect_before:
            return True
        window = self.validate_window
        if window is None:
            return False
        return (
            now - entry.last_used_at >= window
            or entry.checked_at < self.suspect_before + SUSPECT_GRACE
        )

    def take_retired(self) -> list[PoolEntry]:
        """Hand the connections to close over to the shell."""
        retired, self.retired = self.retired, []
        return retired
