"""aiomysql adapter (async only): :class:`AiomysqlDriver` for ``mysql+aiomysql://``.

aiomysql is PyMySQL's protocol code on asyncio streams, so it shares the
PyMySQL adapter's rules (see :mod:`poolkeeper.drivers.pymysql`):
``SERVER_STATUS_IN_TRANS`` for the transaction state, ``COM_PING`` without
reconnect as the ping, ``COM_RESET_CONNECTION`` plus the connect-time session
setup as the full reset, 10 s connect timeout and tuned TCP keepalive.

- Broken: aiomysql drops its stream (``conn.closed`` turns true) when a read
  finds the server gone.
- Close: a ``COM_QUIT`` bounded by :data:`CLOSE_TIMEOUT`, then the transport is
  closed; if that fails or times out the transport is closed at once.
- ``query_timeout``: no "command in progress" flag, so the pool goes by the
  time since checkout and the socket's quiet time; ``abort`` aborts the
  transport.
- Cancellation: a task cancelled in the middle of a query leaves unread
  packets on the wire and aiomysql does not notice; such a connection must be
  closed, not reused (the pool discards connections whose holder was
  cancelled).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import aiomysql
import pymysql

from poolkeeper._config import URL
from poolkeeper._credentials import ConnectArgs
from poolkeeper.drivers._abort import quiet_seconds
from poolkeeper.drivers._connect_errors import classify_mysql
from poolkeeper.drivers._mysql import (
    COM_RESET_CONNECTION,
    COMMON_PARAMS,
    mysql_kwargs,
    refuse_plain_text,
    reset_statements,
    tx_status,
)
from poolkeeper.drivers._mysql_tls import MysqlTls
from poolkeeper.drivers._options import Converter, Keepalive, to_bool
from poolkeeper.drivers.base import TxStatus

#: Seconds the ``COM_QUIT`` goodbye may take before the transport is dropped.
CLOSE_TIMEOUT = 2.0


def _ssl(value: str) -> ssl.SSLContext | None:
    # aiomysql wants an SSLContext; from a URL only "verify with the system
    # trust store" or "no TLS" can be expressed. Custom contexts: connect_args.
    return ssl.create_default_context() if to_bool(value) else None


#: URL parameters accepted by ``mysql+aiomysql://`` and their types.
PARAMS: dict[str, Converter] = {**COMMON_PARAMS, "ssl": _ssl, "echo": to_bool}


def url_to_kwargs(url: URL, connect_args: dict[str, Any]) -> dict[str, Any]:
    """Turn a parsed URL into ``aiomysql.connect`` arguments (``connect_args`` win).

    Raises:
        ConfigError: a query parameter is not supported or not convertible.
    """
    return _kwargs(url, connect_args)[0]


def _kwargs(
    url: URL, connect_args: dict[str, Any]
) -> tuple[dict[str, Any], Keepalive, MysqlTls | None]:
    return mysql_kwargs(
        url,
        connect_args,
        params=PARAMS,
        database_key="db",
        tls_args=MysqlTls.aiomysql_args,
    )


def _uses_tls(conn: Any) -> bool:
    writer = getattr(conn, "_writer", None)
    return writer is not None and writer.get_extra_info("ssl_object") is not None


def _socket_of(conn: Any) -> Any:
    writer = getattr(conn, "_writer", None)
    return writer.transport.get_extra_info("socket") if writer is not None else None


async def _open(**kwargs: Any) -> Any:
    """``aiomysql.connect(**kwargs)``, closing the half-made connection if the
    connect fails or is interrupted.

    aiomysql (0.2, 0.3) closes it itself on an ``Exception``, but not when
    the task is cancelled outside a packet read (a cancellation is a
    ``BaseException``): during the TLS upgrade, for example, it keeps the
    transport it had before, and the ``Connection`` is left to the garbage
    collector (a ``ResourceWarning``, "Unclosed connection"). ``close()``
    is synchronous and idempotent.
    """
    conn = aiomysql.Connection(**kwargs)
    try:
        await conn._connect()
    except BaseException:
        conn.close()
        raise
    return conn


class AiomysqlDriver:
    """Asyncio aiomysql adapter."""

    name = "aiomysql"
    is_async = True
    classify_connect_error = staticmethod(classify_mysql)

    def __init__(self, connect: Callable[[], Awaitable[Any]]) -> None:
        self._connect = connect

    @classmethod
    def from_url(cls, url: URL, connect_args: dict[str, Any]) -> AiomysqlDriver:
        """Build the adapter for a parsed URL.

        Args:
            url: The parsed ``mysql+aiomysql://`` URL.
            connect_args: Extra ``aiomysql.connect`` arguments (plus
                ``keepalives*``); they win over the URL and the defaults.
        """
        kwargs, keepalive, tls = _kwargs(url, connect_args)
        args = ConnectArgs(kwargs)

        async def connect() -> Any:
            conn = await args.aopen(_open)
            try:
                # aiomysql uses the SSLContext only if the server offers TLS.
                refuse_plain_text(conn, tls, _uses_tls, pymysql.err.OperationalError)
                keepalive.apply(_socket_of(conn))
            except BaseException:
                conn.close()
                raise
            return conn

        return cls(connect)

    async def connect(self) -> Any:
        return await self._connect()

    def transaction_status(self, conn: Any) -> TxStatus:
        if conn.closed:
            return TxStatus.UNKNOWN
        return tx_status(conn.server_status)

    def is_broken(self, conn: Any) -> bool:
        return bool(conn.closed)

    def quiet(self, conn: Any) -> float | None:
        """Seconds since data last moved on the connection's socket (None: unknown)."""
        sock = _socket_of(conn)
        return quiet_seconds(sock.fileno()) if sock is not None else None

    def abort(self, conn: Any) -> None:
        """Cut the connection off at once so a blocked call fails (``query_timeout``)."""
        writer = getattr(conn, "_writer", None)
        if writer is not None:
            writer.transport.abort()

    async def commit(self, conn: Any) -> None:
        await conn.commit()

    async def rollback(self, conn: Any) -> None:
        await conn.rollback()

    async def ping(self, conn: Any) -> None:
        await conn.ping(reconnect=False)

    async def reset_session(self, conn: Any) -> None:
        """Send ``COM_RESET_CONNECTION`` and replay aiomysql's session setup.

        Raises:
            pymysql.err.Error: the server lacks the command (MySQL < 5.7.3,
                MariaDB < 10.2.4) or the connection failed; close it.
        """
        await conn._execute_command(COM_RESET_CONNECTION, "")
        await conn._read_ok_packet()
        cursor = await conn.cursor()
        try:
            for statement in reset_statements(conn):
                await cursor.execute(statement)
        finally:
            await cursor.close()

    async def close(self, conn: Any) -> None:
        if conn.closed:
            return
        # aiomysql forgets its writer on close; over TLS the transport then
        # finishes its shutdown a few loop turns later. Wait for it, so that a
        # closed pool has closed its sockets (else a loop ending right after
        # leaves the socket to the garbage collector: a ResourceWarning).
        writer = getattr(conn, "_writer", None)
        try:
            await asyncio.wait_for(conn.ensure_closed(), CLOSE_TIMEOUT)
        except Exception:
            with contextlib.suppress(Exception):
                conn.close()
        except BaseException:
            conn.close()
            raise
        if writer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), CLOSE_TIMEOUT)
