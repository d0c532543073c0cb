"""asyncpg-style ``AsyncPool.acquire()``: a coroutine and an async context manager at once.

This is asyncio-only (the thread pool's ``acquire()`` simply returns the
connection), so it lives outside ``_async/`` and is not part of the generated
twin.

:class:`AcquireContext` wraps the coroutine of the checkout and implements the
coroutine protocol (``send``, ``throw``, ``close``, ``__await__``) by
delegating to it, so ``asyncio.create_task``, ``ensure_future``,
``wait_for``, ``gather``, ``shield`` and anyio task groups accept it as a
coroutine, while ``async with pool.acquire() as conn`` still works (aiohttp's
request context manager is built the same way). The checkout coroutine is
created only when first needed: ``pool.acquire()`` alone starts nothing, and
an ``AcquireContext`` that is never awaited leaves nothing behind and no
"never awaited" warning.
"""

from __future__ import annotations

from collections.abc import Coroutine, Generator
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from poolkeeper._misuse import needs_async_with

if TYPE_CHECKING:
    from poolkeeper._async.pool import AsyncPool

ConnT = TypeVar("ConnT")


class AcquireContext(Coroutine[Any, Any, ConnT]):
    """What :meth:`AsyncPool.acquire` returns.

    ``conn = await pool.acquire()`` (or a task made from it) borrows a
    connection until ``await pool.release(conn)``; ``async with
    pool.acquire() as conn:`` releases it on exit (rolling back an open
    transaction). Like any coroutine it can be awaited or run once.
    """

    __slots__ = ("_conn", "_coro", "_pool", "_timeout")

    def __init__(self, pool: AsyncPool[ConnT], timeout: float | None) -> None:
        self._pool = pool
        self._timeout = timeout
        self._conn: Any = None
        self._coro: Coroutine[Any, Any, ConnT] | None = None

    def _checkout(self) -> Coroutine[Any, Any, ConnT]:
        coro = self._coro
        if coro is None:
            coro = self._coro = self._pool._acquire(self._timeout)
        return coro

    # -- the coroutine protocol, delegated to the checkout ----------------------

    def send(self, value: Any) -> Any:
        """Resume the checkout (the coroutine protocol)."""
        return self._checkout().send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        """Raise an exception inside the checkout (the coroutine protocol)."""
        if val is None and tb is None:
            return self._checkout().throw(typ)
        return self._checkout().throw(typ, val, tb)

    def close(self) -> None:
        """Close the checkout coroutine (the coroutine protocol)."""
        if self._coro is not None:
            self._coro.close()

    def __await__(self) -> Generator[Any, None, ConnT]:
        return self._checkout().__await__()

    # -- the async context manager -----------------------------------------------

    # `with pool.acquire()` instead of `async with`: say so, rather than
    # Python's "does not support the context manager protocol". Nothing has
    # started yet (the checkout coroutine is made lazily), so nothing leaks.
    def __enter__(self) -> NoReturn:
        needs_async_with(
            f"{type(self._pool).__name__}.acquire()", "pool.acquire() as conn"
        )

    def __exit__(self, *exc_info: object) -> None:
        return None

    async def __aenter__(self) -> ConnT:
        self._conn = await self._checkout()
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
