"""psycopg 3 adapters, sync (:class:`PsycopgDriver`) and asyncio (:class:`AsyncPsycopgDriver`).

Transaction state and brokenness come from libpq's connection status without
I/O. The ping is an empty query run in autocommit mode, the cheapest round
trip the protocol has.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from psycopg import pq

from poolkeeper._config import URL
from poolkeeper.drivers.base import TxStatus

_TX = {
    pq.TransactionStatus.IDLE: TxStatus.IDLE,
    pq.TransactionStatus.INTRANS: TxStatus.INTRANS,
    pq.TransactionStatus.INERROR: TxStatus.INERROR,
}


def url_to_kwargs(url: URL, connect_args: dict[str, Any]) -> dict[str, Any]:
    """Turn a parsed URL into libpq keyword arguments (``connect_args`` win)."""
    kwargs: dict[str, Any] = {}
    for key, value in (
        ("host", url.host),
        ("port", url.port),
        ("user", url.username),
        ("password", url.password),
        ("dbname", url.database),
    ):
        if value is not None:
            kwargs[key] = value
    kwargs.update(url.query)
    kwargs.update(connect_args)
    return kwargs


def _status(conn: Any) -> TxStatus:
    return _TX.get(conn.pgconn.transaction_status, TxStatus.UNKNOWN)


def _broken(conn: Any) -> bool:
    return bool(conn.closed or conn.broken)


class PsycopgDriver:
    """Sync psycopg 3 adapter (``postgresql+psycopg://``)."""

    name = "psycopg"
    is_async = False

    def __init__(self, connect: Callable[[], Any]) -> None:
        self._connect = connect

    @classmethod
    def from_url(cls, url: URL, connect_args: dict[str, Any]) -> PsycopgDriver:
        """Build the adapter for a parsed URL."""
        kwargs = url_to_kwargs(url, connect_args)
        return cls(lambda: psycopg.Connection.connect(**kwargs))

    def connect(self) -> Any:
        return self._connect()

    transaction_status = staticmethod(_status)
    is_broken = staticmethod(_broken)

    def commit(self, conn: Any) -> None:
        conn.commit()

    def rollback(self, conn: Any) -> None:
        conn.rollback()

    def ping(self, conn: Any) -> None:
        if conn.autocommit:
            conn.execute("")
            return
        conn.autocommit = True
        try:
            conn.execute("")
        finally:
            with contextlib.suppress(Exception):
                conn.autocommit = False

    def close(self, conn: Any) -> None:
        with contextlib.suppress(Exception):
            conn.close()


class AsyncPsycopgDriver:
    """Asyncio psycopg 3 adapter (``postgresql+psycopg://`` with AsyncPool)."""

    name = "psycopg"
    is_async = True

    def __init__(self, connect: Callable[[], Awaitable[Any]]) -> None:
        self._connect = connect

    @classmethod
    def from_url(cls, url: URL, connect_args: dict[str, Any]) -> AsyncPsycopgDriver:
        """Build the adapter for a parsed URL."""
        kwargs = url_to_kwargs(url, connect_args)
        return cls(lambda: psycopg.AsyncConnection.connect(**kwargs))

    async def connect(self) -> Any:
        return await self._connect()

    transaction_status = staticmethod(_status)
    is_broken = staticmethod(_broken)

    async def commit(self, conn: Any) -> None:
        await conn.commit()

    async def rollback(self, conn: Any) -> None:
        await conn.rollback()

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

    async def close(self, conn: Any) -> None:
        with contextlib.suppress(Exception):
            await conn.close()
