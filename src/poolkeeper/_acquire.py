"""asyncpg-style ``AsyncPool.acquire()``: awaitable and async context manager at once.

This is asyncio-only (the thread pool's ``acquire()`` simply returns the
connection), so it lives outside ``_async/`` and is not part of the generated
twin.
"""

from __future__ import annotations

from collections.abc import Generator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from poolkeeper._async.pool import AsyncPool

ConnT = TypeVar("ConnT")


class AcquireContext(Generic[ConnT]):
    """What :meth:`AsyncPool.acquire` returns.

    ``conn = await pool.acquire()`` borrows a connection until
    ``await pool.release(conn)``; ``async with pool.acquire() as conn:``
    releases it on exit (rolling back an open transaction).
    """

    __slots__ = ("_conn", "_pool", "_timeout")

    def __init__(self, pool: AsyncPool[ConnT], timeout: float | None) -> None:
        self._pool = pool
        self._timeout = timeout
        self._conn: Any = None

    def __await__(self) -> Generator[Any, None, ConnT]:
        return self._pool._acquire(self._timeout).__await__()

    async def __aenter__(self) -> ConnT:
        self._conn = await self._pool._acquire(self._timeout)
        return self._conn  # type: ignore[no-any-return]

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._pool.release(conn)
