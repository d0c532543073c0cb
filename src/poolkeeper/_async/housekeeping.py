"""Housekeeping: what the pool does on its own between checkouts.

Owns: the housekeeper loop (:class:`AsyncHousekeeper`, every few seconds,
holding the pool weakly) and each round (``_housekeep``): lifetimes and idle
time (the core decides, this does the I/O), keepalive pings, the query
watchdog (``query_timeout``), leak reports (``leak_timeout``, and connections
an ``acquire()`` caller dropped or closed), the suspect check after a broken
connection, and waking the waiter a returned connection went to
(``_after_checkin``).

May not touch: the checkout and return paths themselves, validation at
checkout, open/close; it imports only ``connecting`` and ``base`` of the shell.
"""

from __future__ import annotations

import operator
import sys
import traceback
import warnings
import weakref
from typing import Any

from poolkeeper._async.base import ConnT, _monotonic, logger
from poolkeeper._async.connecting import AsyncConnecting
from poolkeeper._build import mypyc_attr
from poolkeeper._concurrency import aspawn
from poolkeeper._config import scrub
from poolkeeper._core.entry import PoolEntry, Waiter
from poolkeeper._core.state import SUSPECT_GRACE
from poolkeeper._held import is_closed
from poolkeeper._sites import Mark, format_site, site_of
from poolkeeper.drivers._hosts import role_matches, role_matters
from poolkeeper.drivers.base import QueryWatch
from poolkeeper.errors import ConnectionLeakWarning

#: Seconds between two looks for connections closed by their ``acquire()``
#: callers while others wait on a full pool (see ``_watch_closed``).
CLOSED_WATCH_INTERVAL = 0.05


@mypyc_attr(allow_interpreted_subclasses=True)  # (see checkout.py)
class AsyncHousekeeping(AsyncConnecting[ConnT]):
    """Periodic and after-the-fact upkeep (see the module docstring)."""

    _housekeeper: AsyncHousekeeper | None

    async def _housekeep(self) -> None:
        """One housekeeping round: retire, ping, report leaks, refill, and
        abort stuck commands (``query_timeout``)."""
        self._take_unreleased()
        now = _monotonic()
        with self._lock:
            due, leaked = self._state.housekeep(now)
            n = self._state.plan_connects(now)
        watch = self._query_watch
        if watch is not None:
            self._watch_queries(watch)
            # Nothing below may hold up the next round: a graceful close or
            # a ping can wait on a hung server.
            if self._state.retired:
                self._spawn_close_retired()
        else:
            await self._close_retired()
        self._spawn_connects(n)
        for entry in leaked:
            self._report_leak(entry, now)
        if due and watch is not None:
            self._background(self._ping_entries, "ping", due)
        elif due:
            await self._ping_entries(due)

    def _watch_queries(self, watch: QueryWatch) -> None:
        """Abort the connections whose command is stuck past ``query_timeout``."""
        busy_of, quiet_of, abort = watch
        limit = self._config.query_timeout or 0.0
        state = self._state
        with self._lock:
            suspects = state.query_suspects(_monotonic())
        if not suspects:
            return
        probes = []
        with self._probe_lock:
            for entry, lent_at in suspects:
                if entry.close_reason is not None:
                    continue  # returned and retired meanwhile: maybe closing
                # Read the driver's state without I/O, with the lock released.
                now = _monotonic()
                try:
                    conn = entry.live_conn()
                    busy = busy_of(conn)
                    quiet = (
                        quiet_of(conn)
                        if busy is not False and now - lent_at >= limit
                        else None
                    )
                except Exception as exc:
                    logger.debug(
                        "pool %r: query watchdog probe failed: %s",
                        self.name,
                        self._describe(exc),
                    )
                    continue
                probes.append((entry, lent_at, busy, quiet, now))
        with self._lock:
            verdicts = [
                (entry, state.judge_query(entry, lent_at, busy, quiet, now))
                for entry, lent_at, busy, quiet, now in probes
            ]
        for entry, stalled in verdicts:
            if stalled is None:
                continue
            logger.warning(
                "pool %r: a command was stuck for %.1f s (query_timeout=%s s), "
                "aborting its connection",
                self.name,
                stalled,
                limit,
            )
            with self._probe_lock:
                if entry.close_reason is None:  # (not closed meanwhile)
                    try:
                        abort(entry.live_conn())
                    except Exception as exc:
                        logger.warning(
                            "pool %r: could not abort a stuck connection: %s",
                            self.name,
                            self._describe(exc),
                        )

    def _report_leak(self, entry: PoolEntry, now: float) -> None:
        held = now - entry.checked_out_at
        message = (
            f"pool {self.name!r}: connection {entry.live_conn()!r} held for {held:.1f} s "
            f"(leak_timeout={self._config.leak_timeout}); acquired at:\n"
            f"{entry.stack or '(stack not captured)'}"
        )
        try:
            warnings.warn(ConnectionLeakWarning(message), stacklevel=1)
        except Warning:
            # A filter turned the warning into an error, but it is raised in
            # the housekeeper, where no caller can catch it: log it instead.
            logger.warning("%s", message)
        if self._events.leak:
            self._emit("leak", entry.live_conn(), duration=held, stack=entry.stack)

    async def _ping_entries(self, entries: list[PoolEntry]) -> None:
        """Ping connections the core lent out for a check, and give them back."""
        roles = self._roles
        for entry in entries:
            ok = not self._driver.is_broken(entry.conn)
            reason = "check"
            if ok:
                try:
                    if roles is not None and (
                        role_matters(roles[0]) or self._state.needs_role_check(entry)
                    ):
                        # The role query is the ping (see AsyncValidation._probe).
                        role = await roles[1](entry.conn)
                        if not role_matches(roles[0], role):
                            ok, reason = False, "role_changed"
                    else:
                        await self._driver.ping(entry.conn)
                except Exception as exc:
                    logger.info(
                        "pool %r: ping failed, closing: %s",
                        self.name,
                        self._describe(exc),
                    )
                    ok = False
            with self._lock:
                waiter = self._state.give_back(
                    entry, _monotonic(), ok=ok, reason=reason
                )
            if waiter is not None:
                waiter.signal.set()
        await self._close_retired()
        self._fill()

    async def check(self) -> None:
        """Ping every idle connection now and close the ones that fail."""
        with self._lock:
            entries = self._state.take_idle(now=_monotonic())
        await self._ping_entries(entries)

    def _take_unreleased(self) -> None:
        """Take back the slots of connections that their ``acquire()`` callers
        dropped (garbage collected) or closed without :meth:`release`."""
        state = self._state
        held = self._held
        driver = self._driver
        found: list[tuple[Mark | None, Any]] = []
        with self._lock:
            now = _monotonic()
            while held.pending:
                entry = held.pending.popleft()
                site = entry.site
                if (
                    entry.conn is None
                    and site is not None
                    and state.take_unreleased(entry, now)
                ):
                    found.append((site, None))
            # Only connections lent through acquire() (with a site): the
            # filter runs in C, so a pool used through connection() alone
            # pays next to nothing here on every wait at saturation.
            for entry in list(filter(_SITE, state.in_use.values())):
                conn = entry.live_conn()
                if conn is not None and is_closed(driver, conn):
                    found.append((entry.site, conn))
                    held.give_back(entry, conn)
                    state.take_unreleased(entry, now)
                    held.remember_closed(conn)
            n = state.plan_connects(now) if found else 0
        if not found:
            return
        self._spawn_connects(n)
        if state.retired:
            self._spawn_close_retired()
        for site, conn in found:
            self._report_unreleased(site, conn)

    def _lends_any(self) -> bool:
        """Whether a connection in use may be lent through ``acquire()``,
        read without the lock where the GIL makes that safe (see
        :func:`_lends`)."""
        if _GIL:
            return _lends(self._state.in_use)
        with self._lock:
            return _lends(self._state.in_use)

    def _watch_closed(self) -> None:
        """Start watching for lent connections closed without :meth:`release`.

        Called by a checkout that finds the pool full. The driver's own
        connection is lent, so the pool cannot see its ``close()``; a caller
        already waiting would otherwise be served only at the next
        housekeeping round. One watcher per pool, whatever the number of
        waiters, and only while a connection is lent through ``acquire()``.
        """
        state = self._state
        with self._lock:
            if self._watching:
                # The running watcher may be about to find no waiter: this
                # caller is not queued yet. It looks once more.
                self._watch_again = True
                return
            if state.closed or not _lends(state.in_use):
                return
            self._watching = True
        try:
            self._background(self._closed_watch, "closed-watch")
        except BaseException:
            self._watching = False
            raise

    async def _closed_watch(self) -> None:
        state = self._state
        try:
            while not await self._closing.wait(CLOSED_WATCH_INTERVAL):
                with self._lock:
                    again, self._watch_again = self._watch_again, False
                    if not (state.waiters or again) or not _lends(state.in_use):
                        # Stop in the same hold of the lock as the decision:
                        # a caller arriving after it starts a new watcher
                        # (cleared later, its request to look once more
                        # would be lost, and nobody would watch for it).
                        self._watching = False
                        return
                self._take_unreleased()
        except BaseException:
            with self._lock:
                self._watching = self._watch_again = False
            raise
        with self._lock:
            self._watching = self._watch_again = False  # the pool is closing

    def _report_unreleased(self, mark: Mark | None, conn: Any) -> None:
        site = site_of(mark)
        how = "dropped (garbage collected)" if conn is None else "closed"
        message = (
            f"pool {self.name!r}: a connection acquired at {format_site(site)} was "
            f"{how} without release(); its slot was taken back. Give connections "
            "back with release(), or use a with block: pool.connection() (commits) "
            "or pool.acquire() (rolls back)"
        )
        try:
            filename, lineno = site or ("<unknown>", 0)
            warning = ConnectionLeakWarning(message)
            warnings.warn_explicit(warning, ConnectionLeakWarning, filename, lineno)
        except Warning:
            # Turned into an error by a filter: not the current caller's to catch.
            logger.warning("%s", message)
        if self._events.leak:
            self._emit("leak", conn, reason="closed" if conn is not None else "dropped")

    async def _after_checkin(self, waiter: Waiter | None, discard: bool) -> None:
        """Wake the waiter a returned connection went to; close what retired."""
        if waiter is not None:
            waiter.signal.set()
        state = self._state
        if state.retired:
            with self._lock:
                n = state.plan_connects(_monotonic())
            self._spawn_connects(n)
            await self._close_retired()
            if discard:
                self._spawn_suspect_check()

    def _spawn_suspect_check(self) -> None:
        """Check, in the background, idle connections that may share a broken one's fate."""
        if self._state.idle and not self._state.closed:
            self._background(self._check_suspects, "check")

    async def _check_suspects(self) -> None:
        # Twice: at once, and again when the grace window has passed, because
        # a connection may answer the first ping while the server is still
        # ending its session (see SUSPECT_GRACE).
        for _ in range(2):
            with self._lock:
                entries = self._state.take_idle(suspects_only=True, now=_monotonic())
            if entries:
                await self._ping_entries(entries)
            if await self._closing.wait(SUSPECT_GRACE):
                return


#: Whether this interpreter has the GIL (a free-threaded build may run
#: another thread in the middle of a C-level pass over a dict).
_GIL: bool = getattr(sys, "_is_gil_enabled", lambda: True)()

#: An entry's acquiring site: set (a non-empty tuple) while it is lent
#: through ``acquire()``, None otherwise.
_SITE = operator.attrgetter("site")


def _lends(in_use: dict[int, PoolEntry]) -> bool:
    """Whether a connection in use is lent through ``acquire()``.

    One C-level pass (``any``, ``map``, ``attrgetter``): with the GIL no
    other thread runs during it, so it may also be read without the lock.
    """
    return any(map(_SITE, in_use.values()))


class AsyncHousekeeper:
    """Runs ``pool._housekeep()`` every few seconds until the pool closes."""

    def __init__(self, pool: AsyncHousekeeping[Any]) -> None:
        self._pool_ref = weakref.ref(pool)
        self._closing = pool._closing
        self._interval = pool._state.housekeeping_interval()
        self._name = pool.name
        self.handle: Any = None

    def start(self) -> None:
        """Start the background loop."""
        self.handle = aspawn(self._run, name=f"poolkeeper-housekeeper-{self._name}")

    async def _run(self) -> None:
        while not await self._closing.wait(self._interval):
            pool = self._pool_ref()
            if pool is None:
                return
            try:
                await pool._housekeep()
            except Exception as exc:
                # The traceback's text is masked like every other message: a
                # driver error may quote the connection string.
                logger.error(
                    "pool %r: housekeeping failed:\n%s",
                    self._name,
                    scrub("".join(traceback.format_exception(exc)), pool._secrets),
                )
            del pool
