"""aiopg adapter (async only): :class:`AiopgDriver` for ``postgresql+aiopg://``.

aiopg drives a psycopg2 connection in libpq's asynchronous mode, which is
always in autocommit: transactions are explicit ``BEGIN``/``COMMIT``
statements, so commit and rollback here are statements too. Transaction state
and brokenness are read from the underlying psycopg2 connection without I/O.

Defaults: libpq TCP keepalives on, and ``connect_timeout=10`` passed to libpq.
libpq does not enforce ``connect_timeout`` on asynchronous connections, though:
what bounds a connect is aiopg's own ``timeout`` (60 s by default), which also
bounds every query. Set it with ``?timeout=`` or ``connect_args``.

``query_timeout`` support: as for psycopg2, on the underlying connection
(``conn.raw``): libpq's ``ACTIVE`` status and a socket shutdown.

Cancellation: when a task is cancelled (or times out) while aiopg waits on the
server, aiopg closes the connection, so :meth:`AiopgDriver.is_broken` reports
it and the pool discards it.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import aiopg
import psycopg2.extensions as ext

from poolkeeper._config import URL
from poolkeeper._credentials import awith_providers
from poolkeeper.drivers import psycopg2 as _psycopg2
from poolkeeper.drivers._connect_errors import classify_libpq
from poolkeeper.drivers._hosts import ROLE_QUERY, Role, role_from
from poolkeeper.drivers._libpq import async_connector, libpq_kwargs, libpq_target
from poolkeeper.drivers._options import to_number
from poolkeeper.drivers.base import TxStatus
from poolkeeper.drivers.psycopg2 import transaction_status
from poolkeeper.errors import ConfigError


def url_to_kwargs(url: URL, connect_args: dict[str, Any]) -> dict[str, Any]:
    """Turn a parsed URL into ``aiopg.connect`` arguments (``connect_args`` win).

    ``?timeout=`` (seconds) is aiopg's own operation timeout; every other query
    parameter must be a libpq keyword.

    Raises:
        ConfigError: a query parameter is neither ``timeout`` nor a libpq keyword.
    """
    query = dict(url.query)
    extra: dict[str, Any] = {}
    if "timeout" in query:
        raw = query.pop("timeout")
        try:
            extra["timeout"] = float(to_number(raw))
        except ValueError:
            raise ConfigError(
                f"{url.scheme}:// URL parameter timeout={raw!r} is not a number of seconds"
            ) from None
    kwargs = libpq_kwargs(
        dataclasses.replace(url, query=query),
        {**extra, **connect_args},
        parse_conninfo=ext.parse_dsn,
        make_conninfo=ext.make_dsn,
    )
    return kwargs


async def _fetch_role_row(conn: Any) -> Any:
    cursor = await conn.cursor()
    try:
        await cursor.execute(ROLE_QUERY)
        return await cursor.fetchone()
    finally:
        cursor.close()


class AiopgDriver:
    """Asyncio aiopg adapter."""

    name = "aiopg"
    is_async = True
    classify_connect_error = staticmethod(classify_libpq)
    #: The URL's ``target_session_attrs`` (None: built from a callable).
    target_session_attrs: str | None = None

    def __init__(self, connect: Callable[[], Awaitable[Any]]) -> None:
        self._connect = connect

    @classmethod
    def from_url(cls, url: URL, connect_args: dict[str, Any]) -> AiopgDriver:
        """Build the adapter for a parsed URL.

        Args:
            url: The parsed ``postgresql+aiopg://`` URL.
            connect_args: Extra ``aiopg.connect`` arguments; they win over the
                URL and over poolkeeper's defaults.
        """
        kwargs = url_to_kwargs(url, connect_args)
        target = libpq_target(url, connect_args)

        connect = awith_providers(aiopg.connect)

        # libpq's asynchronous connect ignores connect_timeout, so a host
        # that does not answer would hold the whole list up: poolkeeper runs
        # the host loop, with the timeout on each host.
        driver = cls(
            async_connector(target, kwargs, connect, _fetch_role_row, native=False)
        )
        driver.target_session_attrs = target.target_session_attrs
        return driver

    async def connect(self) -> Any:
        return await self._connect()

    def transaction_status(self, conn: Any) -> TxStatus:
        return transaction_status(conn.raw)

    def is_broken(self, conn: Any) -> bool:
        return bool(conn.closed)

    @staticmethod
    def is_idle(conn: Any) -> bool:
        # As psycopg2's, plus aiopg's own queue of notifications nobody read.
        return _psycopg2.Psycopg2Driver.is_idle(conn.raw) and conn._notifies.empty()

    async def clear_state(self, conn: Any) -> None:
        """Empty the notices and the notification queue a borrower left (no I/O)."""
        _psycopg2.clear_messages(conn.raw)
        queue = conn._notifies
        while not queue.empty():
            queue.get_nowait()

    def busy(self, conn: Any) -> bool:
        """Whether a command is in progress on the connection."""
        return _psycopg2.busy(conn.raw)

    def quiet(self, conn: Any) -> float | None:
        """Seconds since data last moved on the connection's socket (None: unknown)."""
        return _psycopg2.quiet(conn.raw)

    def abort(self, conn: Any) -> None:
        """Cut the connection off at once so a blocked call fails (``query_timeout``)."""
        _psycopg2.abort(conn.raw)

    async def _run(self, conn: Any, sql: str) -> None:
        cursor = await conn.cursor()
        try:
            await cursor.execute(sql)
        finally:
            cursor.close()

    async def commit(self, conn: Any) -> None:
        await self._run(conn, "COMMIT")

    async def rollback(self, conn: Any) -> None:
        await self._run(conn, "ROLLBACK")

    async def ping(self, conn: Any) -> None:
        # Autocommit mode: the ping never opens a transaction.
        await self._run(conn, "SELECT 1")

    async def session_role(self, conn: Any) -> Role:
        """Read the session's role with one query (:data:`~poolkeeper.drivers._hosts.ROLE_QUERY`),
        leaving no transaction open: the pool asks it of a connection whose
        server turned suspect (see ``_hoststate``)."""
        return role_from(*(await _fetch_role_row(conn)))  # autocommit: no transaction

    async def reset_session(self, conn: Any) -> None:
        """Roll back, then run ``DISCARD ALL`` to drop every piece of session state."""
        if transaction_status(conn.raw) is not TxStatus.IDLE:
            await self._run(conn, "ROLLBACK")
        await self._run(conn, "DISCARD ALL")

    async def close(self, conn: Any) -> None:
        # aiopg's close() is synchronous underneath (PQfinish) and returns a
        # completed future: it cannot block. Never twice (aiopg 1.4): it
        # keeps the socket's file number, and closing again stops the event
        # loop watching that number, which a newer connection may have by
        # now (a connection closed by its user, then retired by the pool:
        # the replacement's connect would hang).
        if conn.raw.closed == 1:
            return
        with contextlib.suppress(Exception):
            await conn.close()
