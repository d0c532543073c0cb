"""aiosqlite adapter (async only): :class:`AiosqliteDriver` for ``sqlite+aiosqlite:///path``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import aiosqlite

from poolkeeper._config import URL
from poolkeeper.drivers._connect_errors import classify_sqlite
from poolkeeper.drivers.base import TxStatus
from poolkeeper.drivers.sqlite3 import url_to_kwargs

# Module constants: an Enum member read off its class costs a metaclass hook.
_IDLE, _INTRANS = TxStatus.IDLE, TxStatus.INTRANS


async def _joined(conn: Any) -> None:
    """Join the worker thread of a connection that failed to open.

    aiosqlite 0.22 stops that thread but does not wait for it, and the thread
    then reports to the event loop; had the loop closed meanwhile (the error
    reached the caller at once, who ended the program), the thread would die
    with "Event loop is closed". It has nothing left to do but that report,
    so the join takes microseconds (bounded at 1 s all the same).
    """
    thread = getattr(conn, "_thread", None)
    if thread is not None and thread.ident is not None:
        thread.join(1.0)
    # Let the loop run the callback the thread scheduled.
    await asyncio.sleep(0)


class AiosqliteDriver:
    """Asyncio aiosqlite adapter."""

    name = "aiosqlite"
    is_async = True
    classify_connect_error = staticmethod(classify_sqlite)

    def __init__(self, connect: Callable[[], Awaitable[Any]]) -> None:
        self._connect = connect

    @classmethod
    def from_url(cls, url: URL, connect_args: dict[str, Any]) -> AiosqliteDriver:
        """Build the adapter for a parsed URL."""
        kwargs = url_to_kwargs(url, connect_args)
        kwargs.pop("check_same_thread", None)

        async def connect() -> Any:
            conn = aiosqlite.connect(**kwargs)
            try:
                return await conn
            except Exception:
                await _joined(conn)
                raise

        return cls(connect)

    async def connect(self) -> Any:
        return await self._connect()

    def transaction_status(self, conn: Any) -> TxStatus:
        try:
            return _INTRANS if conn.in_transaction else _IDLE
        except ValueError:
            return TxStatus.UNKNOWN

    @staticmethod
    def is_idle(conn: Any) -> bool:
        # Open (a closed connection raises ValueError) and outside a
        # transaction: one attribute read on every return.
        try:
            return not conn.in_transaction
        except ValueError:
            return False

    def is_broken(self, conn: Any) -> bool:
        return getattr(conn, "_connection", None) is None

    async def commit(self, conn: Any) -> None:
        await conn.commit()

    async def rollback(self, conn: Any) -> None:
        await conn.rollback()

    async def ping(self, conn: Any) -> None:
        cursor = await conn.execute("SELECT 1")
        await cursor.close()

    async def close(self, conn: Any) -> None:
        with contextlib.suppress(Exception):
            await conn.close()
