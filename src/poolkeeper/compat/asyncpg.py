"""asyncpg's ``create_pool()``, backed by a :class:`poolkeeper.AsyncPool`.

Replace ``asyncpg.create_pool(...)`` with
``poolkeeper.compat.asyncpg.create_pool(...)`` and code written for asyncpg's
pool keeps working::

    pool = await create_pool(dsn, min_size=5, max_size=20)
    async with pool.acquire() as conn:
        await conn.fetch("SELECT 1")
    await pool.close()

Arguments map onto poolkeeper's: ``min_size``/``max_size`` as they are,
``max_queries`` -> ``max_uses``, ``max_inactive_connection_lifetime`` ->
``max_idle``, ``init`` -> ``configure``, ``reset`` -> ``reset`` (default:
``Connection.reset()``, as asyncpg does); ``setup`` runs on every acquire,
and if it raises the connection is closed and the error propagates, as in
asyncpg. On release, as asyncpg's pool: a warning for listeners left on the
connection, the borrower's transaction, cursor and prepared-statement
objects stop working, an open transaction is rolled back through asyncpg's
own bookkeeping, and notification and log listeners are removed. The
remaining keyword arguments go to ``asyncpg.connect``.

Differences from asyncpg (see docs/DRIVERS.md, "Drop-in compatibility"):

- ``acquire()`` hands out asyncpg's own ``Connection``, not a proxy: using it
  after ``release()`` is not caught (its transaction, cursor and
  prepared-statement objects do refuse use, as with asyncpg).
- ``max_queries`` counts checkouts, not queries, so connections are retired
  no earlier than asyncpg would retire them.
- ``max_inactive_connection_lifetime`` closes idle connections above
  ``min_size`` only; ``min_size`` connections stay open (pinged when stale).
- Connections are also retired after poolkeeper's ``max_lifetime`` (default
  3600 s); pass ``pool_options={"max_lifetime": None}`` to turn that off.
- Stricter on release than asyncpg: termination listeners and query loggers
  a borrower added are removed too (those ``init`` added stay), and with a
  custom ``reset`` a borrower's notification listeners are also unregistered
  on the server (``UNLISTEN *``), which asyncpg leaves to ``reset``.
- ``terminate()`` drops every connection at once; the rest of the shutdown
  (stopping background tasks) finishes in a task that a later ``close()``
  waits for.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping
from types import TracebackType
from typing import Any

import asyncpg

from poolkeeper._async.pool import AsyncPool
from poolkeeper.compat._checkouts import Checkouts
from poolkeeper.errors import PoolClosed, PoolTimeout

__all__ = ["Pool", "PoolAcquireContext", "create_pool"]

#: How long ``acquire()`` waits without a ``timeout``: asyncpg waits forever,
#: poolkeeper needs a finite number.
WAIT_FOREVER = 365 * 24 * 3600.0

#: poolkeeper arguments ``create_pool`` already decides.
_RESERVED_OPTIONS = frozenset(
    {"connect", "min_size", "max_size", "max_uses", "max_idle", "configure", "reset"}
)

Hook = Callable[[Any], Awaitable[Any]]


def create_pool(
    dsn: str | None = None,
    *,
    min_size: int = 10,
    max_size: int = 10,
    max_queries: int = 50000,
    max_inactive_connection_lifetime: float = 300.0,
    setup: Hook | None = None,
    init: Hook | None = None,
    reset: Hook | None = None,
    connection_class: type[Any] | None = None,
    record_class: type[Any] | None = None,
    pool_options: Mapping[str, Any] | None = None,
    **connect_kwargs: Any,
) -> Pool:
    """Create an asyncpg-style pool; await it or enter it with ``async with``.

    Args:
        dsn: Connection string for ``asyncpg.connect``.
        min_size: Connections opened by initialisation and kept open.
        max_size: Most connections open at once.
        max_queries: Checkouts after which a connection is replaced
            (poolkeeper ``max_uses``).
        max_inactive_connection_lifetime: Seconds after which an idle
            connection above ``min_size`` is closed; 0 disables it
            (poolkeeper ``max_idle``).
        setup: Coroutine function called with the connection on every
            ``acquire()``.
        init: Coroutine function called once with each new connection
            (poolkeeper ``configure``).
        reset: Coroutine function called with the connection on each
            release (after an open transaction is rolled back); default
            ``Connection.reset()``. If it raises, the connection is closed.
        connection_class: ``asyncpg.connect``'s ``connection_class``.
        record_class: ``asyncpg.connect``'s ``record_class``.
        pool_options: Further :class:`poolkeeper.AsyncPool` arguments
            (``max_lifetime``, ``check``, ``name``, ``validate``, ...).
        **connect_kwargs: Keyword arguments for ``asyncpg.connect``.

    Returns:
        A :class:`Pool`, not yet initialised: ``pool = await create_pool(...)``
        or ``async with create_pool(...) as pool``.

    Raises:
        ValueError: An argument is out of range.
    """
    if connection_class is not None:
        connect_kwargs["connection_class"] = connection_class
    if record_class is not None:
        connect_kwargs["record_class"] = record_class
    return Pool(
        dsn,
        connect_kwargs,
        min_size=min_size,
        max_size=max_size,
        max_queries=max_queries,
        max_inactive_connection_lifetime=max_inactive_connection_lifetime,
        setup=setup,
        init=init,
        reset=reset,
        pool_options=pool_options or {},
    )


class Pool:
    """An asyncpg-style pool; build it with :func:`create_pool`.

    ``pool.pool`` is the :class:`poolkeeper.AsyncPool` underneath, for stats,
    events and health checks.
    """

    def __init__(
        self,
        dsn: str | None,
        connect_kwargs: dict[str, Any],
        *,
        min_size: int,
        max_size: int,
        max_queries: int,
        max_inactive_connection_lifetime: float,
        setup: Hook | None,
        init: Hook | None,
        reset: Hook | None,
        pool_options: Mapping[str, Any],
    ) -> None:
        if max_queries <= 0:
            raise ValueError("max_queries is expected to be greater than zero")
        if max_inactive_connection_lifetime < 0:
            raise ValueError(
                "max_inactive_connection_lifetime is expected to be greater "
                "or equal to zero"
            )
        clash = sorted(_RESERVED_OPTIONS & pool_options.keys())
        if clash:
            raise ValueError(f"pool_options cannot set {clash}: use create_pool's")
        self._setup = setup
        self._init = init
        # Every connection ever opened, so that terminate() can reach idle ones.
        self._conns: weakref.WeakSet[Any] = weakref.WeakSet()
        self._out = Checkouts()
        self._initialized = False
        self._closing = False
        self._shutdown: asyncio.Task[None] | None = None

        async def connect() -> Any:
            return await asyncpg.connect(dsn, **connect_kwargs)

        self.pool: AsyncPool[Any] = AsyncPool(
            connect,
            min_size=min_size,
            max_size=max_size,
            timeout=WAIT_FOREVER,
            max_uses=max_queries,
            max_idle=max_inactive_connection_lifetime or None,
            configure=self._configure,
            reset=reset or _default_reset,
            **pool_options,
        )
        """The :class:`poolkeeper.AsyncPool` doing the work."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} over {self.pool!r}>"

    async def _configure(self, conn: Any) -> None:
        self._conns.add(conn)
        if self._init is not None:
            await self._init(conn)

    # -- lifecycle ---------------------------------------------------------------

    def __await__(self) -> Generator[Any, None, Pool]:
        return self._initialize().__await__()

    async def __aenter__(self) -> Pool:
        return await self._initialize()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _initialize(self) -> Pool:
        """Open ``min_size`` connections; raise the connect error if one fails."""
        if self._initialized:
            return self
        if self._closing:
            raise asyncpg.InterfaceError("pool is closed")
        try:
            await self.pool.open(wait=True)
        except PoolTimeout as exc:
            if exc.__cause__ is None:
                raise
            raise exc.__cause__ from None
        self._initialized = True
        return self

    def is_closing(self) -> bool:
        """Return True if the pool is closing or closed."""
        return self._closing

    async def close(self) -> None:
        """Close the pool gracefully.

        New acquires fail at once; this waits until every acquired connection
        has been released, then closes them all. If it is interrupted (for
        example cancelled), the pool is terminated instead.
        """
        if self._shutdown is not None:
            await asyncio.shield(self._shutdown)
            return
        self._closing = True
        try:
            await self._out.all_back.wait()
            await self.pool.close()
        except BaseException:
            self.terminate()
            raise

    def terminate(self) -> None:
        """Close every connection now, including acquired ones.

        Connections still held by callers are dropped; releasing them later
        does nothing. Stopping background work finishes in a task that
        :meth:`close` waits for.
        """
        if self._shutdown is not None:
            return
        self._closing = True
        for conn in list(self._conns):
            conn.terminate()
        held = self._out.drop_all()
        self._shutdown = asyncio.get_running_loop().create_task(
            self._finish_terminate(held)
        )

    async def _finish_terminate(self, held: Iterable[Any]) -> None:
        for conn in held:
            # Terminated connections report closed: the pool discards them.
            with contextlib.suppress(Exception):
                await self.pool.release(conn)
        await self.pool.close()

    # -- acquire / release -------------------------------------------------------

    def acquire(self, *, timeout: float | None = None) -> PoolAcquireContext:
        """Acquire a connection: ``await`` it, or use it with ``async with``.

        Args:
            timeout: Seconds to wait for a connection; None waits as long as
                it takes, as in asyncpg.

        Raises:
            TimeoutError: No connection within ``timeout`` (a
                :class:`poolkeeper.PoolTimeout`).
            asyncpg.InterfaceError: The pool is not initialised, closing or
                closed.
        """
        return PoolAcquireContext(self, timeout)

    async def _acquire(self, timeout: float | None) -> Any:
        if self._closing:
            raise asyncpg.InterfaceError("pool is closing")
        if not self._initialized:
            raise asyncpg.InterfaceError("pool is not initialized")
        try:
            conn = await self.pool.acquire(
                timeout=WAIT_FOREVER if timeout is None else timeout
            )
        except PoolClosed as exc:
            raise asyncpg.InterfaceError("pool is closing") from exc
        except PoolTimeout as exc:
            if isinstance(exc, asyncio.TimeoutError):
                raise
            # Python 3.10: asyncio.TimeoutError is not the builtin TimeoutError.
            raise asyncio.TimeoutError(str(exc)) from exc
        self._out.add(conn)
        if self._setup is not None:
            try:
                await self._setup(conn)
            except BaseException:
                # As asyncpg: a connection whose setup failed may be in any
                # state, so it is closed (the pool discards it), not reused.
                conn.terminate()
                await self.release(conn)
                raise
        return conn

    async def release(self, connection: Any, *, timeout: float | None = None) -> None:
        """Give back a connection taken with :meth:`acquire`.

        An open transaction is rolled back and ``reset`` runs; a connection
        that broke, or whose reset failed, is closed.

        Args:
            connection: The connection.
            timeout: Seconds the rollback and reset may take; past that the
                connection is closed instead.

        Raises:
            asyncpg.InterfaceError: ``connection`` was not acquired from this
                pool, or was already released.
        """
        try:
            if not self._out.take_back(connection):
                return
        except LookupError:
            raise asyncpg.InterfaceError(
                f"Pool.release() received invalid connection: {connection!r} "
                "is not a member of this pool"
            ) from None
        conn = connection
        # asyncpg's own release step: warn about listeners left behind, and
        # make the borrower's transaction, cursor and prepared-statement
        # objects refuse further use ("released back to the pool").
        conn._on_release()
        if timeout is None:
            await self.pool.release(conn)
        else:
            # Cancelled midway, poolkeeper closes the connection.
            await asyncio.wait_for(self.pool.release(conn), timeout)

    # -- sizes -------------------------------------------------------------------

    def get_size(self) -> int:
        """Return the number of open connections (idle and in use)."""
        return self.pool.stats().size

    def get_idle_size(self) -> int:
        """Return the number of idle connections."""
        return self.pool.stats().idle

    def get_min_size(self) -> int:
        """Return the minimum number of connections kept open."""
        return self.pool.stats().min_size

    def get_max_size(self) -> int:
        """Return the maximum number of connections."""
        return self.pool.stats().max_size

    # -- query shortcuts (each acquires, runs one call and releases) -------------

    async def execute(
        self, query: str, *args: Any, timeout: float | None = None
    ) -> str:
        """Run ``Connection.execute`` on a pooled connection; return the status."""
        async with self.acquire() as conn:
            status: str = await conn.execute(query, *args, timeout=timeout)
            return status

    async def executemany(
        self, command: str, args: Iterable[Any], *, timeout: float | None = None
    ) -> None:
        """Run ``Connection.executemany`` on a pooled connection."""
        async with self.acquire() as conn:
            await conn.executemany(command, args, timeout=timeout)

    async def fetch(
        self,
        query: str,
        *args: Any,
        timeout: float | None = None,
        record_class: type[Any] | None = None,
    ) -> list[Any]:
        """Run ``Connection.fetch`` on a pooled connection; return all rows."""
        async with self.acquire() as conn:
            rows: list[Any] = await conn.fetch(
                query, *args, timeout=timeout, record_class=record_class
            )
            return rows

    async def fetchrow(
        self,
        query: str,
        *args: Any,
        timeout: float | None = None,
        record_class: type[Any] | None = None,
    ) -> Any:
        """Run ``Connection.fetchrow`` on a pooled connection; return one row or None."""
        async with self.acquire() as conn:
            return await conn.fetchrow(
                query, *args, timeout=timeout, record_class=record_class
            )

    async def fetchval(
        self, query: str, *args: Any, column: int = 0, timeout: float | None = None
    ) -> Any:
        """Run ``Connection.fetchval`` on a pooled connection; return one value."""
        async with self.acquire() as conn:
            return await conn.fetchval(query, *args, column=column, timeout=timeout)


class PoolAcquireContext:
    """What :meth:`Pool.acquire` returns: awaitable, or an async context manager."""

    __slots__ = ("_conn", "_pool", "_timeout")

    def __init__(self, pool: Pool, timeout: float | None) -> None:
        self._pool = pool
        self._timeout = timeout
        self._conn: Any = None

    def __await__(self) -> Generator[Any, None, Any]:
        return self._pool._acquire(self._timeout).__await__()

    async def __aenter__(self) -> Any:
        if self._conn is not None:
            raise asyncpg.InterfaceError("a connection is already acquired")
        self._conn = await self._pool._acquire(self._timeout)
        return self._conn

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, self._conn = self._conn, None
        await self._pool.release(conn)


async def _default_reset(conn: Any) -> None:
    await conn.reset()
