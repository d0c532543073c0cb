"""The generic DB-API 2.0 adapters: what poolkeeper does with a library it has no adapter for.

:class:`DBAPIDriver` (sync) and :class:`AsyncDBAPIDriver` (asyncio, awaiting
the DB-API methods that return awaitables) follow conservative rules: the
transaction state is unknown, so a normal exit commits and a return rolls
back; brokenness is a ``closed`` or ``open`` flag when the connection has
one; the ping is ``SELECT 1``. :mod:`poolkeeper.drivers.dbapi` falls back on
them for connections of an unknown class, and re-exports them.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable
from typing import Any

from poolkeeper.drivers.base import TxStatus


def _closed_attr(conn: Any) -> bool:
    """Whether the connection says, without I/O, that it is closed.

    DB-API 2.0 has no standard for this; the two common spellings are a
    ``closed`` flag (psycopg2, aiopg, aiomysql) and an ``open`` flag (PyMySQL,
    mysqlclient), both cleared or set by the driver when a query finds the
    server gone. Either one, when present as a value, is trusted.
    """
    closed = getattr(conn, "closed", None)
    if closed is not None and not callable(closed):  # closed() methods: unknown
        return bool(closed)
    is_open = getattr(conn, "open", None)
    if is_open is not None and not callable(is_open):
        return not is_open
    return False


class DBAPIDriver:
    """Generic sync DB-API 2.0 adapter around a zero-argument connect callable."""

    name = "dbapi"
    is_async = False

    def __init__(self, connect: Callable[[], Any]) -> None:
        self._connect = connect

    def connect(self) -> Any:
        return self._connect()

    def transaction_status(self, conn: Any) -> TxStatus:
        return TxStatus.UNKNOWN

    def is_broken(self, conn: Any) -> bool:
        return _closed_attr(conn)

    def commit(self, conn: Any) -> None:
        conn.commit()

    def rollback(self, conn: Any) -> None:
        conn.rollback()

    def ping(self, conn: Any) -> None:
        cursor = conn.cursor()
        try:
            cursor.execute("SELECT 1")
            cursor.fetchall()
        finally:
            cursor.close()

    def close(self, conn: Any) -> None:
        with contextlib.suppress(Exception):
            conn.close()


async def maybe_await(value: Any) -> Any:
    """Return ``value``, awaited first if it is awaitable."""
    if inspect.isawaitable(value):
        return await value
    return value


class AsyncDBAPIDriver:
    """Generic asyncio adapter: DB-API method names, awaited when they return awaitables."""

    name = "dbapi"
    is_async = True

    def __init__(self, connect: Callable[[], Any]) -> None:
        self._connect = connect

    async def connect(self) -> Any:
        return await maybe_await(self._connect())

    def transaction_status(self, conn: Any) -> TxStatus:
        return TxStatus.UNKNOWN

    def is_broken(self, conn: Any) -> bool:
        return _closed_attr(conn)

    async def commit(self, conn: Any) -> None:
        await maybe_await(conn.commit())

    async def rollback(self, conn: Any) -> None:
        await maybe_await(conn.rollback())

    async def ping(self, conn: Any) -> None:
        cursor = await maybe_await(conn.cursor())
        try:
            await maybe_await(cursor.execute("SELECT 1"))
            await maybe_await(cursor.fetchall())
        finally:
            await maybe_await(cursor.close())

    async def close(self, conn: Any) -> None:
        with contextlib.suppress(Exception):
            await maybe_await(conn.close())
