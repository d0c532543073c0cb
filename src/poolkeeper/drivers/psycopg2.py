"""psycopg2 adapter (sync only): :class:`Psycopg2Driver` for ``postgresql+psycopg2://``.

Transaction state comes from libpq (``conn.info.transaction_status``) and
brokenness from ``conn.closed`` (psycopg2 sets it to 2 when a query finds the
server gone), both without I/O. psycopg2 refuses an empty query, so the ping
is ``SELECT 1``, run in autocommit mode when no transaction is open so that it
does not start one.

``query_timeout`` support: a command is in progress while libpq's transaction
status is ``ACTIVE``; ``abort`` shuts down the socket behind ``conn.fileno()``.
Both read libpq's state without psycopg2's connection lock, so they answer
while another thread is blocked in a query.

Connections get libpq TCP keepalives and a 10 s ``connect_timeout`` unless the
URL or ``connect_args`` set them. Close is ``conn.close()``: it only frees the
libpq connection and sends a Terminate message, it never waits for the server.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import psycopg2
import psycopg2.extensions as ext

from poolkeeper._config import URL
from poolkeeper._credentials import with_providers
from poolkeeper.drivers._abort import socket_probes
from poolkeeper.drivers._connect_errors import classify_libpq
from poolkeeper.drivers._hosts import ROLE_QUERY, Role, role_from
from poolkeeper.drivers._libpq import PQ_ACTIVE as _PQ_ACTIVE
from poolkeeper.drivers._libpq import TX_STATUS as _TX_STATUS
from poolkeeper.drivers._libpq import libpq_kwargs, libpq_target, sync_connector
from poolkeeper.drivers._probes import psycopg2_idle
from poolkeeper.drivers.base import TxStatus


def clear_messages(conn: Any) -> None:
    """Empty a psycopg2 connection's ``notices`` and ``notifies``.

    Both are lists psycopg2 appends to, or objects with an ``append`` method
    the application installed; such an object is kept (psycopg2 cannot tell
    one ``configure`` installed from a borrower's) and emptied if it has a
    ``clear`` method.
    """
    for received in (conn.notices, conn.notifies):
        clear = getattr(received, "clear", None)
        if clear is not None:
            clear()


#: ACTIVE: a command is running, which a pooled connection at rest never
#: has; reporting it as open makes the pool roll back to be safe.
_TX = {**_TX_STATUS, _PQ_ACTIVE: TxStatus.INTRANS}


def url_to_kwargs(url: URL, connect_args: dict[str, Any]) -> dict[str, Any]:
    """Turn a parsed URL into ``psycopg2.connect`` arguments (``connect_args`` win).

    Raises:
        ConfigError: a URL query parameter is not a libpq keyword.
    """
    return libpq_kwargs(
        url, connect_args, parse_conninfo=ext.parse_dsn, make_conninfo=ext.make_dsn
    )


def transaction_status(conn: Any) -> TxStatus:
    """Map libpq's transaction status of a psycopg2 connection, without I/O."""
    if conn.closed:
        return TxStatus.UNKNOWN
    return _TX.get(conn.info.transaction_status, TxStatus.UNKNOWN)


def busy(conn: Any) -> bool:
    """Tell whether a command is in progress on a psycopg2 connection (no I/O)."""
    return not conn.closed and conn.get_transaction_status() == _PQ_ACTIVE


def _fd(conn: Any) -> int:
    try:
        return int(conn.fileno())
    except Exception:  # closed: InterfaceError
        return -1


#: The connection's socket: seconds it has been quiet, and shutting it down.
quiet, abort = socket_probes(_fd, lambda conn: not conn.closed)


class Connection(ext.connection):  # type: ignore[misc]
    """psycopg2's connection as a Python class, the pool's default
    ``connection_factory``: unlike its C base it can take the pool-aware
    class that makes ``with pool.acquire() as conn:`` give it back (see
    ``poolkeeper._held``). It keeps its base's module and name, so that it
    reads as psycopg2's own wherever the module decides (error origins)."""

    __module__ = ext.connection.__module__
    __qualname__ = ext.connection.__qualname__


class Psycopg2Driver:
    """Sync psycopg2 adapter."""

    name = "psycopg2"
    is_async = False
    classify_connect_error = staticmethod(classify_libpq)
    #: The URL's ``target_session_attrs`` (None: built from a callable).
    target_session_attrs: str | None = None

    def __init__(self, connect: Callable[[], Any]) -> None:
        self._connect = connect

    @classmethod
    def from_url(cls, url: URL, connect_args: dict[str, Any]) -> Psycopg2Driver:
        """Build the adapter for a parsed URL.

        Args:
            url: The parsed ``postgresql+psycopg2://`` URL.
            connect_args: Extra ``psycopg2.connect`` arguments; they win over
                the URL and over poolkeeper's defaults.
        """
        kwargs = url_to_kwargs(url, connect_args)
        kwargs.setdefault("connection_factory", Connection)
        target = libpq_target(url, connect_args)
        driver = cls(
            sync_connector(
                target, kwargs, with_providers(psycopg2.connect), ext.libpq_version()
            )
        )
        driver.target_session_attrs = target.target_session_attrs
        return driver

    def connect(self) -> Any:
        return self._connect()

    def transaction_status(self, conn: Any) -> TxStatus:
        return transaction_status(conn)

    def is_broken(self, conn: Any) -> bool:
        # closed: 0 open, 1 closed by the client, 2 lost (found out by a query)
        return bool(conn.closed)

    # A native function in the compiled build (see _probes).
    is_idle = staticmethod(psycopg2_idle)

    @staticmethod
    def clear_state(conn: Any) -> None:
        """Empty ``conn.notices`` and ``conn.notifies`` (no I/O)."""
        clear_messages(conn)

    busy = staticmethod(busy)
    quiet = staticmethod(quiet)
    abort = staticmethod(abort)

    def commit(self, conn: Any) -> None:
        conn.commit()

    def rollback(self, conn: Any) -> None:
        conn.rollback()

    def ping(self, conn: Any) -> None:
        if conn.autocommit or transaction_status(conn) is not TxStatus.IDLE:
            self._select_one(conn)
            return
        # Switching autocommit is client-side only in psycopg2: no round trip.
        conn.autocommit = True
        try:
            self._select_one(conn)
        finally:
            if not conn.closed:
                conn.autocommit = False

    def session_role(self, conn: Any) -> Role:
        """Read the session's role with one query (:data:`~poolkeeper.drivers._hosts.ROLE_QUERY`),
        leaving no transaction open: the pool asks it of a connection whose
        server turned suspect (see ``_hoststate``)."""
        autocommit = conn.autocommit
        if not autocommit:
            conn.autocommit = True  # client-side only: no round trip
        try:
            with conn.cursor() as cursor:
                cursor.execute(ROLE_QUERY)
                row = cursor.fetchone()
        finally:
            if not autocommit and not conn.closed:
                conn.autocommit = False
        return role_from(*row)

    @staticmethod
    def _select_one(conn: Any) -> None:
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchall()

    def reset_session(self, conn: Any) -> None:
        """Roll back, then run ``DISCARD ALL`` to drop every piece of session state.

        ``DISCARD ALL`` cannot run inside a transaction, hence the rollback
        and the autocommit switch. psycopg2 keeps no server-side prepared
        statements, so nothing on the client goes stale.
        """
        if transaction_status(conn) is not TxStatus.IDLE:
            conn.rollback()
        autocommit = conn.autocommit
        conn.autocommit = True
        try:
            with conn.cursor() as cursor:
                cursor.execute("DISCARD ALL")
        finally:
            if not conn.closed:
                conn.autocommit = autocommit

    def close(self, conn: Any) -> None:
        with contextlib.suppress(Exception):
            conn.close()
