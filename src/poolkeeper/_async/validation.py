"""Validation at checkout, within the caller's deadline.

Owns: the ping and the ``check`` hook before a connection is handed out
(``_validate``), discarding a connection that fails them and trying another
within the caller's timeout, the floor under a ping's budget, the timeout a
hung ping turns into, and taking back a connection whose holder was
interrupted (``_reclaim``, finished by ``recovery.py``).

May not touch: the fast checkout and return paths (``checkout``, ``checkin``);
it imports ``lifecycle`` and the modules below it.
"""

from __future__ import annotations

from typing import Any

from poolkeeper._async.base import ConnT, _monotonic, logger
from poolkeeper._async.lifecycle import AsyncLifecycle
from poolkeeper._async.recovery import arecover
from poolkeeper._build import mypyc_attr
from poolkeeper._concurrency import Overrun, acall, acall_within
from poolkeeper._core.connect_errors import chained
from poolkeeper._core.entry import PoolEntry
from poolkeeper.drivers._hosts import role_matches, role_matters
from poolkeeper.errors import PoolTimeout

#: Seconds a checkout's validation ping may take even when the caller's
#: deadline is nearer (raised to the mean connect time, see _ping_floor): a
#: healthy server answers well within it, so a nearly spent timeout does not
#: turn a good connection into a discarded one.
PING_MIN_BUDGET = 0.1
#: ...and the most that floor may grow to (connects slowed by an outage or a
#: slow ``configure`` hook must not stretch every caller's timeout).
PING_MAX_FLOOR = 1.0


@mypyc_attr(allow_interpreted_subclasses=True)  # (see checkout.py)
class AsyncValidation(AsyncLifecycle[ConnT]):
    """Checkout validation (see the module docstring)."""

    async def _validate(
        self, entry: PoolEntry, limit: float, started: float, due: bool
    ) -> PoolEntry:
        """Ping and/or run the ``check`` hook; on failure discard and try another.

        Retries stay within the caller's timeout ``limit`` (resolved: see
        ``check_timeout_arg``), counted from ``started`` (when the checkout
        began); the caller never sees the failure. ``due``: whether ``entry``
        needs a ping (the caller has asked ``needs_validation``); asked again
        for each connection tried after it.
        """
        state = self._state
        deadline = started + limit
        while True:
            # The ping of a caller cancelled meanwhile, handed over to finish
            # in the background (see recovery.py).
            handover: list[Any] = []
            try:
                role = None
                if due:
                    role = await self._probe(entry, deadline, handover)
                if role is not None:
                    self._role_changed(entry, role)
                else:
                    if self._check is not None:
                        await acall(self._check, entry.conn)
                    with self._lock:
                        state.validated(entry, _monotonic())
                    return entry
            except BaseException as exc:
                if not isinstance(exc, Exception):
                    # Interrupted (a cancelled task): no sign of trouble with
                    # the connection; it is recovered in the background.
                    budget = max(deadline - _monotonic(), self._ping_floor())
                    pending = handover[0] if handover else None
                    self._reclaim(entry, pending, budget, withdraw=True)
                    raise
                with self._lock:
                    state.discard_checked_out(entry, "check", _monotonic())
                    n = state.plan_connects(_monotonic())
                self._spawn_connects(n)
                # In the background: closing politely may wait on a hung server.
                self._spawn_close_retired()
                self._spawn_suspect_check()
                logger.info(
                    "pool %r: validation failed, connection discarded: %s",
                    self.name,
                    self._describe(exc),
                )
                remaining = deadline - _monotonic()
                if isinstance(exc, Overrun) and remaining <= 0:
                    # The server does not answer and the caller's time is up:
                    # do not start on the next idle connection.
                    raise chained(
                        self._validation_timeout(limit, started), exc
                    ) from exc
            remaining = deadline - _monotonic()
            with self._lock:
                fresh = state.checkout(_monotonic())
            if fresh is None:
                fresh = await self._wait(max(remaining, 0.0), may_connect=False)
            entry = fresh
            due = state.needs_validation(entry, _monotonic())

    async def _probe(
        self, entry: PoolEntry, deadline: float, handover: list[Any]
    ) -> str | None:
        """Ping ``entry`` (or, its server being suspect, read its role, which
        pings too); return the role when it no longer matches, else None.

        Raises:
            Exception: the connection is broken, or did not answer in time.
        """
        if self._driver.is_broken(entry.conn):
            raise ConnectionError("the driver reports it closed")
        roles = self._roles
        # The role query is a ping too (one round trip): read the role
        # whenever a ping is due anyway and the role can fail the target.
        role_due = roles is not None and (
            role_matters(roles[0]) or self._state.needs_role_check(entry)
        )
        probe = roles[1] if roles is not None and role_due else self._driver.ping
        if self._abort is None:
            result = await probe(entry.conn)
        else:
            # A server that hangs while its TCP stack still ACKs would hold
            # the ping, and the caller, for as long as it hangs: past the
            # caller's deadline the socket is shut down and the connection
            # discarded.
            budget = max(deadline - _monotonic(), self._ping_floor())
            result = await acall_within(
                probe, entry.conn, budget, self._abort, handover.append
            )
        if roles is None or not role_due or role_matches(roles[0], str(result)):
            return None
        return str(result)

    def _role_changed(self, entry: PoolEntry, role: str) -> None:
        """Retire a connection whose server's role no longer matches
        ``target_session_attrs``; a replacement goes to the current primary."""
        with self._lock:
            self._state.discard_checked_out(entry, "role_changed", _monotonic())
            n = self._state.plan_connects(_monotonic())
        self._spawn_connects(n)
        self._spawn_close_retired()
        logger.info(
            "pool %r: a connection's server is now %s, not %s: closed",
            self.name,
            role,
            self._state.want_role,
        )

    def _reclaim(
        self, entry: PoolEntry, pending: Any, budget: float, *, withdraw: bool
    ) -> None:
        """Take back a connection whose holder was interrupted; recover it in
        the background (``pending``: its unfinished validation ping)."""
        with self._lock:
            if withdraw:
                self._state.withdraw(entry)
            self._state.reclaim(entry, _monotonic())
        self._background(arecover, "recover", self, entry, pending, budget)

    def _ping_floor(self) -> float:
        """The least time a validation ping gets, however near the caller's deadline.

        A healthy server answers a ping within about one connect's worth of
        round trips, so the floor is the mean connect time (at least
        :data:`PING_MIN_BUDGET`): a slow but healthy link does not get its
        good connections shut down because a caller's time is almost spent.
        """
        mean = self._state.connect_time.mean
        return min(max(PING_MIN_BUDGET, mean), PING_MAX_FLOOR)

    def _validation_timeout(self, limit: float, started: float) -> PoolTimeout:
        """Count and describe a checkout whose validation ping overran its deadline."""
        waited = _monotonic() - started
        with self._lock:
            waiting = self._state.validation_timed_out()
        if self._events.timeout:
            self._emit("timeout", None, duration=waited)
        return PoolTimeout(
            f"pool {self.name!r} timed out after {waited:.1f} s (timeout {limit:.1f} s): "
            "the server did not answer the validation ping of an idle connection "
            "(discarded)",
            pool_name=self.name,
            timeout=limit,
            waiting=waiting,
        )
