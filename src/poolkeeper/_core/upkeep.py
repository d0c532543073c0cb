"""UpkeepState: maintenance, sizing and closing, and the query watchdog.

Owns: one housekeeping round (lifetimes, idle timeout above ``min_size``,
keepalive pings due, leak reports, freeze detection), the housekeeping
interval, ``resize`` and ``close``, the query watchdog's bookkeeping
(``query_timeout``), and connections the pool lends to itself (a check of
idle connections, a keepalive ping, a recovery after a cancelled caller).

May not touch: the pings, socket shutdowns and closes themselves (the shell
does that I/O with the lock released), checkout (``checkout``), connecting
(``connecting``); no clock or lock.
"""

from __future__ import annotations

import math
from collections import deque

from poolkeeper._config import PoolConfig
from poolkeeper._core.base import _HARMLESS_REASONS, SUSPECT_GRACE, StateBase
from poolkeeper._core.entry import PoolEntry, Waiter
from poolkeeper._core.policy import query_stalled_for
from poolkeeper.errors import PoolClosed


class UpkeepState(StateBase):
    """Housekeeping, resize, close and the query watchdog; see the module docstring."""

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
            self.suspect_all(now)
        if now >= self.next_role_round and self.hosts is not None:
            # role_check_interval: every connection has its role read at its
            # next checkout (no round trip until then).
            self.hosts.suspect_all(now)
            self.recheck_before = max(self.recheck_before, now)
            self.next_role_round = now + (self.config.role_check_interval or math.inf)
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
            for x in (
                cfg.max_idle,
                cfg.max_lifetime,
                cfg.keepalive,
                cfg.leak_timeout,
                cfg.role_check_interval,
            )
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
        waiters = self.take_waiters()
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
        # No longer its caller's: never reported as unreleased (a release()
        # interrupted while ending the transaction did give it back).
        entry.site = None
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
            self._trouble(entry, now)
            self._retire(entry, "query_timeout")
            return None
        if not ok or self.closed:
            if not ok and reason not in _HARMLESS_REASONS:
                self._trouble(entry, now)
            elif not ok and reason == "role_changed":
                # Its server changed role: check its siblings' roles too.
                self.suspect_host(entry, now)
            self._retire(entry, reason if not ok else "close")
            return None
        entry.checked_at = now
        return self._place(entry, now)


def _lent_at(entry: PoolEntry) -> float:
    """When a lent-out entry was lent: to a caller, or to the pool for a ping."""
    at = entry.checked_out_at
    return at if at != math.inf else entry.lent_at
