"""asyncpg adapter (async only): :class:`AsyncpgDriver` for ``postgresql+asyncpg://``.

asyncpg reports whether a transaction is open but not whether it failed; the
pool treats an open one as needing a commit (normal exit) or a rollback.
Closing uses a short graceful close and falls back to ``terminate()``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from poolkeeper._config import URL
from poolkeeper.drivers.base import TxStatus

#: Seconds a graceful close may take before the socket is simply dropped.
CLOSE_TIMEOUT = 2.0


class AsyncpgDriver:
    """Asyncio asyncpg adapter."""

    name = "asyncpg"
    is_async = True

    def __init__(self, connect: Callable[[], Awaitable[Any]]) -> None:
        self._connect = connect

    @classmethod
    def from_url(cls, url: URL, connect_args: dict[str, Any]) -> AsyncpgDriver:
        """Build the adapter for a parsed URL."""
        kwargs: dict[str, Any] = {}
        for key, value in (
            ("host", url.host),
            ("port", url.port),
            ("user", url.username),
            ("password", url.password),
            ("database", url.database),
        ):
            if value is not None:
                kwargs[key] = value
        params = dict(url.query)
        if "sslmode" in params:
            kwargs["ssl"] = params.pop("sslmode")
        if params:
            kwargs["server_settings"] = params
        kwargs.update(connect_args)
        return cls(lambda: asyncpg.connect(**kwargs))

    async def connect(self) -> Any:
        return await self._connect()

    def transaction_status(self, conn: Any) -> TxStatus:
        return TxStatus.INTRANS if conn.is_in_transaction() else TxStatus.IDLE

    def is_broken(self, conn: Any) -> bool:
        return bool(conn.is_closed())

    async def commit(self, conn: Any) -> None:
        await conn.execute("COMMIT")

    async def rollback(self, conn: Any) -> None:
        await conn.execute("ROLLBACK")

    async def ping(self, conn: Any) -> None:
        await conn.execute("SELECT 1")

    async def close(self, conn: Any) -> None:
        if conn.is_closed():
            return
        try:
            await asyncio.wait_for(conn.close(), CLOSE_TIMEOUT)
        except BaseException:
            conn.terminate()
            raise
