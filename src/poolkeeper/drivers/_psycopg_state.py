"""What a psycopg 3 connection tells without I/O, and what a borrower leaves on it.

Shared by the sync and asyncio psycopg adapters (:mod:`poolkeeper.drivers.psycopg`)
through :class:`PsycopgState`: libpq's transaction status (via
:mod:`~poolkeeper.drivers._libpq`'s codes), brokenness, the idle check run on
every return, the handler lists kept from ``configure`` (see ``_kept``), the
clean-up of transaction blocks, two-phase state and unread notifications, and
the socket probes behind ``query_timeout``. Nothing here does I/O or awaits.
"""

from __future__ import annotations

from typing import Any

from poolkeeper.drivers._abort import socket_probes
from poolkeeper.drivers._connect_errors import classify_libpq
from poolkeeper.drivers._kept import keep, restore
from poolkeeper.drivers._libpq import PQ_ACTIVE as _PQ_ACTIVE
from poolkeeper.drivers._libpq import PQ_SETTLED as _PQ_SETTLED
from poolkeeper.drivers._libpq import TX_STATUS as _TX
from poolkeeper.drivers._probes import psycopg_idle
from poolkeeper.drivers.base import TxStatus


def status(conn: Any) -> TxStatus:
    return _TX.get(conn.pgconn.transaction_status, TxStatus.UNKNOWN)


def _broken(conn: Any) -> bool:
    return bool(conn.closed or conn.broken)


#: psycopg's notice and notification handler lists (see ``_kept``).
_KEPT = ("_notice_handlers", "_notify_handlers")


#: psycopg 3.2+ queues notifications received with no handler for notifies().
_BACKLOG = "_notifies_backlog"


def _baseline(conn: Any) -> None:
    for attr in _KEPT:
        keep(conn, attr)
    if not hasattr(conn, _BACKLOG):
        conn._notifies_backlog = None  # psycopg < 3.2: no backlog to check


def end_blocks(conn: Any) -> None:
    # A conn.transaction() block the borrower left open (entered, never
    # exited) makes psycopg refuse commit() and rollback(); the pool ends the
    # transaction for it, so forget the block, as a fresh connection has none.
    conn._num_transactions = 0


def clear_state(conn: Any) -> None:
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


class PsycopgState:
    """What both psycopg adapters read and clear without I/O (no coroutines)."""

    name = "psycopg"
    classify_connect_error = staticmethod(classify_libpq)
    transaction_status = staticmethod(status)
    is_broken = staticmethod(_broken)
    is_idle = staticmethod(psycopg_idle)
    baseline = staticmethod(_baseline)
    busy = staticmethod(_busy)
    quiet = staticmethod(_quiet)
    abort = staticmethod(_abort)
    settled = staticmethod(_settled)
