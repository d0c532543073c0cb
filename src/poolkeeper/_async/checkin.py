"""The return path's slow half: ending transactions, resets, rollback warnings.

Owns: ``_return`` (a connection that needs work on its way back: an open
transaction to commit or roll back, the ``reset`` hook, client-side state to
clear, a connection the query watchdog aborted), ``_clean``, the rollback
warning (once per call site), and the :class:`~poolkeeper.QueryTimeout` a
watchdog abort becomes.

May not touch: the fast return (``release`` and the ``connection()`` block's
exit, in ``checkout``); it imports ``validation`` and the modules below it.
"""

from __future__ import annotations

from poolkeeper._async.base import ConnT, _monotonic, logger
from poolkeeper._async.validation import AsyncValidation
from poolkeeper._build import mypyc_attr
from poolkeeper._concurrency import acall
from poolkeeper._core.connect_errors import chained
from poolkeeper._core.entry import PoolEntry
from poolkeeper._origin import from_driver
from poolkeeper._sites import caller_site, format_site
from poolkeeper.drivers._hosts import host_of, is_failover_error, role_matches
from poolkeeper.drivers.base import TxStatus
from poolkeeper.errors import PoolError, QueryTimeout

#: Call sites a pool remembers having warned about (a bound on its memory).
MAX_WARNED_SITES = 1000


@mypyc_attr(allow_interpreted_subclasses=True)  # (see checkout.py)
class AsyncCheckin(AsyncValidation[ConnT]):
    """The slow return path (see the module docstring)."""

    async def _return(
        self,
        conn: ConnT,
        commit: bool | None,
        exc: BaseException | None = None,
        entry: PoolEntry | None = None,
        dirty: bool = False,
    ) -> None:
        """Give back ``conn``; ``commit``: end an open transaction with a commit
        (True) or a rollback (False: an exception left the block; None:
        :meth:`release`). ``exc``: what left the ``connection()`` block.
        ``entry``: see :meth:`_lent_entry`; ``dirty``: the caller found ``conn``
        needs cleaning (a reset hook, or not idle): no second probe.

        Raises:
            PoolError: ``conn`` is not checked out from this pool.
            QueryTimeout: the query watchdog aborted the connection and the
                block failed because of it (``exc`` or a failed commit), or
                a transaction to commit was lost.
        """
        entry = self._lent_entry(conn, entry)
        if entry is None:
            return  # closed by its user, and already taken back
        discard = False
        error: BaseException | None = None
        lost = False
        if entry.aborted:
            # Its socket is shut down: nothing to end or reset.
            discard = True
            lost = commit is True and exc is None and self._in_transaction(conn)
        elif (
            dirty
            or self._reset is not None
            or self._idle_probe(conn) != self._idle_value
        ):
            discard, error = await self._clean(conn, commit)
            if error is not None and not isinstance(error, Exception):
                # Interrupted while ending the transaction (a cancelled task).
                if self._events.checkin:  # (raised past the bus: dropped)
                    self._emit_checkin(conn, _monotonic() - entry.checked_out_at)
                self._reclaim(entry, None, 0.0, withdraw=False)
                raise error
        # Off the fast path only: the block failed, or release() had a
        # transaction to end. A broken connection is handled below.
        role_changed = (
            self._roles is not None
            and not discard
            and (exc is not None or commit is None)
            and self._failover_seen(entry, conn, exc)
        )
        now = _monotonic()
        interrupt = None
        if self._events.checkin:
            interrupt = self._emit_checkin(conn, now - entry.checked_out_at)
        if discard or role_changed:
            # A driver that closes a connection when a task is cancelled in
            # the middle of a command (aiopg, aiomysql) says nothing about
            # the server: no suspicion on the other connections.
            cancelled = exc is not None and not isinstance(exc, Exception)
            reason = "cancelled" if cancelled else "broken"
            if not discard:
                reason = "role_changed"  # its host is suspect already
            discard = discard and not cancelled  # check the other connections?
            with self._lock:
                waiter = self._state.checkin(entry, now, discard=True, reason=reason)
        else:
            waiter = self._state.release(entry, now, self._lock)
        if waiter is not None or self._state.retired:
            await self._after_checkin(waiter, discard)
        if interrupt is not None:
            raise interrupt
        if entry.aborted:
            # Aborted before or while the block ended (a commit, say). Only
            # what the abort caused becomes QueryTimeout: the driver's errors
            # (and the OS's); the application's own exceptions pass unchanged.
            cause = error if error is not None else exc
            if lost or (cause is not None and from_driver(cause, conn)):
                raise chained(self._query_timeout_error(), cause)
        if error is not None:
            raise error

    def _lent_entry(self, conn: ConnT, entry: PoolEntry | None) -> PoolEntry | None:
        """The record of ``conn``, lent by this pool: ``entry`` if the caller
        has it and it is still lent, else looked up. None: its user closed it
        and the pool took it back already.

        Raises:
            PoolError: ``conn`` is not checked out from this pool.
        """
        state = self._state
        if entry is None or state.in_use.get(entry.key) is not entry:
            entry = state.in_use.get(id(conn))
            if entry is None and self._held.forget_closed(conn):
                return None
        if entry is None or entry.conn is not conn:
            raise PoolError(
                f"connection {conn!r} is not checked out from pool {self.name!r} "
                "(released twice, or from another pool?)",
                pool_name=self.name,
            )
        return entry

    def _emit_checkin(self, conn: ConnT, held: float) -> BaseException | None:
        """Tell the checkin listeners; return (not raise) what a listener
        raised past the event bus (KeyboardInterrupt: the bus only swallows
        Exception), for the caller to raise once the connection is back."""
        try:
            self._emit("checkin", conn, duration=held)
        except BaseException as exc:
            return exc
        return None

    async def _release_told(self, entry: PoolEntry, conn: ConnT, now: float) -> None:
        """The fast return (``release()``, a ``connection()`` block's exit)
        when there are checkin listeners: they are told first, and the
        connection goes back even if one raises past the event bus."""
        interrupt = self._emit_checkin(conn, now - entry.checked_out_at)
        state = self._state
        waiter = state.release(entry, now, self._lock)
        if waiter is not None or state.retired:
            await self._after_checkin(waiter, False)
        if interrupt is not None:
            raise interrupt

    def _failover_seen(
        self, entry: PoolEntry, conn: ConnT, exc: BaseException | None
    ) -> bool:
        """Look for a sign of failover on a returned, unbroken connection.

        A server answer of :data:`~poolkeeper.drivers._hosts.FAILOVER_SQLSTATES`
        (read-only transaction, shutting down), or a role the server reports
        (no I/O: it did so with its last answer) that no longer matches
        ``target_session_attrs``, makes the connection's host suspect: its
        other connections have their role checked before they are lent.
        Returns whether this connection's own role no longer matches.
        """
        assert self._roles is not None
        try:
            role = host_of(conn).role
        except Exception:
            role = "unknown"
        changed = role != "unknown" and not role_matches(self._roles[0], role)
        if not changed and not is_failover_error(exc):
            return False
        with self._lock:
            self._state.suspect_host(entry, _monotonic())
        host = entry.host
        logger.info(
            "pool %r: sign of failover from %s (%s): the roles of its connections "
            "are checked before reuse",
            self.name,
            f"{host.address[0]}:{host.address[1]}" if host else "a server",
            f"it is now {role}" if changed or exc is None else self._describe(exc),
        )
        return changed

    def _in_transaction(self, conn: ConnT) -> bool:
        try:
            return self._driver.transaction_status(conn) is not TxStatus.IDLE
        except Exception:
            return True

    def _query_timeout_error(self) -> QueryTimeout:
        limit = self._config.query_timeout
        return QueryTimeout(
            f"pool {self.name!r}: a command was stuck for longer than "
            f"query_timeout={limit} s; the connection was aborted and discarded",
            pool_name=self.name,
            timeout=limit,
        )

    async def _clean(
        self, conn: ConnT, commit: bool | None
    ) -> tuple[bool, BaseException | None]:
        """End the transaction of a returned connection and run the reset hook.

        Returns whether to discard the connection, and an error the caller
        must see (a failed commit, or an interruption).
        """
        driver = self._driver
        discard = False
        error: BaseException | None = None
        try:
            if driver.is_broken(conn):
                discard = True
            else:
                status = driver.transaction_status(conn)
                if status is not TxStatus.IDLE:
                    if commit and status is not TxStatus.INERROR:
                        try:
                            await driver.commit(conn)
                        except Exception as exc:
                            # The caller must hear about a failed commit.
                            error = exc
                            discard = True
                    else:
                        if commit is None:
                            self._warn_rollback(status)
                        await driver.rollback(conn)
                if self._clear_state is not None and not discard:
                    await self._clear_state(conn)
                if self._reset is not None and not discard:
                    await acall(self._reset, conn)
        except BaseException as exc:
            # A connection whose reset failed or was interrupted is not reusable.
            discard = True
            if not isinstance(exc, Exception):
                error = exc
            else:
                logger.warning(
                    "pool %r: resetting a returned connection failed, closing it: %s",
                    self.name,
                    self._describe(exc),
                )
        return discard, error

    def _warn_if_open(self, conn: ConnT) -> None:
        """Warn as :meth:`_warn_rollback` if ``conn`` has a transaction to roll back."""
        status = self._driver.transaction_status(conn)
        if status is not TxStatus.IDLE:
            self._warn_rollback(status)

    def _warn_rollback(self, status: TxStatus) -> None:
        """Say (once per call site) that release() rolls back an open transaction."""
        if status is TxStatus.UNKNOWN:
            return  # the driver cannot tell (mysqlclient): nothing to say
        site = caller_site()
        sites = self._rollback_sites
        if site in sites or len(sites) >= MAX_WARNED_SITES:
            return
        sites.add(site)
        logger.warning(
            "pool %r: a connection came back with a transaction %s at %s; it was "
            "rolled back: release() and acquire()'s with block roll back, while "
            "connection()'s with block commits on normal exit. Commit before "
            "releasing, or use connection(). (Logged once per call site.)",
            self.name,
            "in error" if status is TxStatus.INERROR else "open",
            format_site(site),
        )
