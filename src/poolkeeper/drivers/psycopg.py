"""psycopg 3 adapters, sync (:class:`PsycopgDriver`) and asyncio (:class:`AsyncPsycopgDriver`).

Transaction state and brokenness come from libpq's connection status without
I/O. The ping is an empty query run in autocommit mode, the cheapest round
trip the protocol has. Connections get libpq TCP keepalives and a 10 s
``connect_timeout`` unless the URL or ``connect_args`` set them (see
:data:`poolkeeper.drivers._libpq.LIBPQ_DEFAULTS`); psycopg enforces
``connect_timeout`` itself for async connections too.

``query_timeout`` support: a command is in progress while libpq's transaction
status is ``ACTIVE``; ``abort`` shuts down the socket (``conn.pgconn.socket``),
so a call blocked on a frozen server fails with ``OperationalError`` at once.

``settled``: an interrupted connection (a cancelled task, Ctrl-C) is kept
when libpq says no command is in progress: psycopg cancels the command on the
server and reads the reply before it re-raises, so a rollback makes the
connection clean (see docs/RELIABILITY.md, "Cancellation without churn").

``reset_session`` runs ``DISCARD ALL``. psycopg notices that command and
forgets its own prepared statements, so its automatic preparation keeps
working afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from poolkeeper._config import URL
from poolkeeper._credentials import awith_providers, with_providers
from poolkeeper.drivers._abort import socket_probes
from poolkeeper.drivers._connect_errors import classify_libpq
from poolkeeper.drivers._hosts import ROLE_QUERY
from poolkeeper.drivers._kept import keep, restore
from poolkeeper.drivers._libpq import PQ_ACTIVE as _PQ_ACTIVE
from poolkeeper.drivers._libpq import PQ_IDLE as _PQ_IDLE
from poolkeeper.drivers._libpq import PQ_SETTLED as _PQ_SETTLED
from poolkeeper.drivers._libpq import TX_STATUS as _TX
from poolkeeper.drivers._libpq import (
    async_connector,
    libpq_does_it,
    libpq_kwargs,
    libpq_target,
    sync_connector,
)
from poolkeeper.drivers.base import TxStatus


def url_to_kwargs(url: URL, connect_args: dict[str, Any]) -> dict[str, Any]:
    """Turn a parsed URL into libpq keyword arguments (``connect_args`` win).

    Raises:
        ConfigError: a URL query parameter is not a libpq keyword.
    """
    return libpq_kwargs(
        url, connect_args, parse_conninfo=conninfo_to_dict, make_conninfo=make_conninfo
    )


def _status(conn: Any) -> TxStatus:
    return _TX.get(conn.pgconn.transaction_status, TxStatus.UNKNOWN)


def _broken(conn: Any) -> bool:
    return bool(conn.closed or conn.broken)


#: psycopg's notice and notification handler lists (see ``_kept``).
_KEPT = ("_notice_handlers", "_notify_handlers")


#: psycopg 3.2+ queues notifications received with no handler for notifies().
_BACKLOG = "_notifies_backlog"


def _idle(conn: Any) -> bool:
    # libpq reports PQTRANS_UNKNOWN for a closed or broken connection, so one
    # compare says "open, healthy and outside a transaction"; the rest is
    # psycopg's client-side state a borrower may leave (see _clear_state).
    return conn.pgconn.transaction_status == _PQ_IDLE and not (
        conn._num_transactions
        or conn._tpc
        # Attribute reads only (no calls): this runs on every return.
        or conn._notice_handlers.changed
        or conn._notify_handlers.changed
        or conn._notifies_backlog
    )


def _baseline(conn: Any) -> None:
    for attr in _KEPT:
        keep(conn, attr)
    if not hasattr(conn, _BACKLOG):
        conn._notifies_backlog = None  # psycopg < 3.2: no backlog to check


def _end_blocks(conn: Any) -> None:
    # A conn.transaction() block the borrower left open (entered, never
    # exited) makes psycopg refuse commit() and rollback(); the pool ends the
    # transaction for it, so forget the block, as a fresh connection has none.
    conn._num_transactions = 0


def _clear_state(conn: Any) -> None:
    # Called once the transaction is ended: forget a two-phase transaction
    # left prepared (tpc_prepare() without tpc_commit()) and the handlers a
    # borrower added; those configure added stay.
    conn._num_transactions = 0
    conn._tpc = None
    for attr in _KEPT:
        restore(conn, attr)
    backlog = conn._notifies_backlog
    if backlog:
        # Notifications nobody read: the next borrower's notifies() must not
        # start with them.
        backlog.clear()


def _busy(conn: Any) -> bool:
    # ACTIVE: a command was sent and its results are not all read. A closed
    # or broken connection reports UNKNOWN: nothing can be running on it.
    return conn.pgconn.transaction_status == _PQ_ACTIVE  # type: ignore[no-any-return]


def _settled(conn: Any) -> bool:
    # psycopg answers an interrupted command (a cancelled task, Ctrl-C) with
    # a cancel request and reads the reply before it re-raises, so a status
    # other than ACTIVE (a command still running) or UNKNOWN (closed,
    # broken) means the connection is between messages: a rollback cleans
    # it. psycopg closes the connection itself if the server ignores the
    # cancel for 5 s.
    return not conn.closed and conn.pgconn.transaction_status in _PQ_SETTLED


def _fd(conn: Any) -> int:
    try:
        return int(conn.pgconn.socket)
    except Exception:  # closed: psycopg raises OperationalError
        return -1


_quiet, _abort = socket_probes(_fd, lambda conn: not conn.closed)


async def _fetch_role_row(conn: Any) -> Any:
    cursor = await conn.execute(ROLE_QUERY)
    row = await cursor.fetchone()
    await conn.rollback()
    return row


def ping(conn: Any) -> None:
    """Run an empty query in autocommit mode (it opens no transaction).

    The autocommit flag is put back as it was; Django's backend uses this as
    its ``CONN_HEALTH_CHECKS`` check too.
    """
    if conn.autocommit:
        conn.execute("")
        return
    conn.autocommit = True
    try:
        conn.execute("")
    finally:
        with contextlib.suppress(Exception):
            conn.autocommit = False


class _PsycopgState:
    """What both psycopg adapters read and clear without I/O (no coroutines)."""

    name = "psycopg"
    classify_connect_error = staticmethod(classify_libpq)
    transaction_status = staticmethod(_status)
    is_broken = staticmethod(_broken)
    is_idle = staticmethod(_idle)
    baseline = staticmethod(_baseline)
    busy = staticmethod(_busy)
    quiet = staticmethod(_quiet)
    abort = staticmethod(_abort)
    settled = staticmethod(_settled)


class PsycopgDriver(_PsycopgState):
    """Sync psycopg 3 adapter (``postgresql+psycopg://``)."""

    is_async = False

    def __init__(self, connect: Callable[[], Any]) -> None:
        self._connect = connect

    @classmethod
    def from_url(cls, url: URL, connect_args: dict[str, Any]) -> PsycopgDriver:
        """Build the adapter for a parsed URL (multi-host: see ``_hosts``)."""
        kwargs = url_to_kwargs(url, connect_args)
        target = libpq_target(url, connect_args)
        return cls(
            sync_connector(
                target, kwargs, with_providers(psycopg.Connection.connect), pq.version()
            )
        )

    def connect(self) -> Any:
        return self._connect()

    def commit(self, conn: Any) -> None:
        _end_blocks(conn)
        conn.commit()

    def rollback(self, conn: Any) -> None:
        _end_blocks(conn)
        conn.rollback()

    def clear_state(self, conn: Any) -> None:
        """Forget transaction blocks and the handlers a borrower added (no I/O)."""
        _clear_state(conn)

    def ping(self, conn: Any) -> None:
        ping(conn)

    def reset_session(self, conn: Any) -> None:
        """Roll back, then run ``DISCARD ALL`` to drop every piece of session state.

        Clears settings, temporary tables, prepared statements, advisory locks
        and ``LISTEN`` registrations. ``DISCARD ALL`` cannot run inside a
        transaction, hence the rollback and the autocommit switch.
        """
        if _status(conn) is not TxStatus.IDLE:
            conn.rollback()
        autocommit = conn.autocommit
        conn.autocommit = True
        try:
            conn.execute("DISCARD ALL")
        finally:
            conn.autocommit = autocommit

    def close(self, conn: Any) -> None:
        with contextlib.suppress(Exception):
            conn.close()


class AsyncPsycopgDriver(_PsycopgState):
    """Asyncio psycopg 3 adapter (``postgresql+psycopg://`` with AsyncPool)."""

    is_async = True

    def __init__(self, connect: Callable[[], Awaitable[Any]]) -> None:
        self._connect = connect

    @classmethod
    def from_url(cls, url: URL, connect_args: dict[str, Any]) -> AsyncPsycopgDriver:
        """Build the adapter for a parsed URL (multi-host: see ``_hosts``).

        psycopg runs the host loop of async connections itself, with a
        timeout per host; libpq checks each host's role.
        """
        kwargs = url_to_kwargs(url, connect_args)
        target = libpq_target(url, connect_args)
        native = libpq_does_it(target, pq.version())
        return cls(
            async_connector(
                target,
                kwargs,
                awith_providers(psycopg.AsyncConnection.connect),
                _fetch_role_row,
                native=native,
            )
        )

    async def connect(self) -> Any:
        return await self._connect()

    async def commit(self, conn: Any) -> None:
        _end_blocks(conn)
        await conn.commit()

    async def rollback(self, conn: Any) -> None:
        _end_blocks(conn)
        await conn.rollback()

    async def clear_state(self, conn: Any) -> None:
        """Forget transaction blocks and the handlers a borrower added (no I/O)."""
        _clear_state(conn)

    async def ping(self, conn: Any) -> None:
        if conn.autocommit:
            await conn.execute("")
            return
        await conn.set_autocommit(True)
        try:
            await conn.execute("")
        finally:
            with contextlib.suppress(Exception):
                await conn.set_autocommit(False)

    async def reset_session(self, conn: Any) -> None:
        """Roll back, then run ``DISCARD ALL`` (see :meth:`PsycopgDriver.reset_session`)."""
        if _status(conn) is not TxStatus.IDLE:
            await conn.rollback()
        autocommit = conn.autocommit
        await conn.set_autocommit(True)
        try:
            await conn.execute("DISCARD ALL")
        finally:
            await conn.set_autocommit(autocommit)

    async def close(self, conn: Any) -> None:
        with contextlib.suppress(Exception):
            await conn.close()
