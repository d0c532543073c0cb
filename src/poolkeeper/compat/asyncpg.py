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

#: Seconds an expired connection may take to close gracefully.
RETIRE_TIMEOUT = 5.0

#: poolkeeper arguments ``create_pool`` already decides.
_RESERVED_OPTIONS = frozenset(
    {"connect", "min_size", "max_size", "max_uses", "max_idle", "configure", "reset"}
)

Hook = Callable[[Any], Awaitable[Any]]


def create_pool(
    dsn: str | None = None,
    *,
    init_size: int | None = None,
    min_size: int = 10,
    max_size: int = 10,
    max_queries: int = 50000,
    max_inactive_connection_lifetime: float = 300.0,
    connect: Callable[..., Awaitable[Any]] | None = None,
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
        init_size: Connections opened by initialisation (default:
            ``min_size``); between ``min_size`` and ``max_size``.
        min_size: Connections kept open.
        max_size: Most connections open at once.
        max_queries: Checkouts after which a connection is replaced
            (poolkeeper ``max_uses``).
        max_inactive_connection_lifetime: Seconds after which an idle
            connection above ``min_size`` is closed; 0 disables it
            (poolkeeper ``max_idle``).
        connect: Coroutine function called instead of ``asyncpg.connect``,
            with the same arguments (``dsn``, ``connection_class``,
            ``record_class``, ``loop`` and ``**connect_kwargs``); it must
            return a ``connection_class`` instance.
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
        init_size=min_size if init_size is None else init_size,
        connect=connect,
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
        init_size: int,
        connect: Callable[..., Awaitable[Any]] | None,
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
        _check_sizes(init_size, min_size, max_size)
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
        # The expire_connections() generation each connection was opened in.
        self._born: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self._generation = 0
        self._out = Checkouts()
        self._initialized = False
        self._initializing = False
        self._closing = False
        self._shutdown: asyncio.Task[None] | None = None

        self._init_size = init_size
        self._min_size = min_size
        self._connect_fn = connect
        self._dsn = dsn
        self._connect_kwargs = connect_kwargs
        self.pool: AsyncPool[Any] = AsyncPool(
            self._new_connection,
            # Initialisation opens init_size, then min_size are kept.
            min_size=init_size,
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

    async def _new_connection(self) -> Any:
        kwargs = self._connect_kwargs
        if self._connect_fn is None:
            return await asyncpg.connect(self._dsn, **kwargs)
        cls = kwargs.get("connection_class", asyncpg.Connection)
        conn = await self._connect_fn(
            self._dsn,
            loop=asyncio.get_running_loop(),
            **{"connection_class": cls, "record_class": asyncpg.Record, **kwargs},
        )
        if not isinstance(conn, cls):
            bad = type(conn)
            bad_name = (
                bad.__name__
                if bad.__module__ == "builtins"
                else f"{bad.__module__}.{bad.__name__}"
            )
            raise asyncpg.InterfaceError(
                "expected pool connect callback to return an instance of "
                f"'{cls.__module__}.{cls.__name__}', got '{bad_name}'"
            )
        return conn

    def set_connect_args(self, dsn: str | None = None, **connect_kwargs: Any) -> None:
        """Use new connection arguments for the connections opened from now on.

        Connections already open stay until they are retired, as in asyncpg.
        """
        keep = ("connection_class", "record_class")
        kept = {k: v for k, v in self._connect_kwargs.items() if k in keep}
        self._dsn = dsn
        self._connect_kwargs = {**connect_kwargs, **kept}

    async def _configure(self, conn: Any) -> None:
        self._conns.add(conn)
        self._born[conn] = self._generation
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
        if self._initializing:
            raise asyncpg.InterfaceError("pool is being initialized in another task")
        self._initializing = True
        try:
            await self.pool.open(wait=True)
            if self._init_size != self._min_size:
                await self.pool.resize(min_size=self._min_size)
        except PoolTimeout as exc:
            if exc.__cause__ is None:
                raise
            raise exc.__cause__ from None
        finally:
            self._initializing = False
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
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            # Called outside the loop (asyncpg's terminate() is synchronous):
            # the task runs when the pool's loop next does.
            loop = self.pool._loop or asyncio.get_event_loop_policy().get_event_loop()
        self._shutdown = loop.create_task(self._finish_terminate(held))

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
            if self._initializing:
                raise asyncpg.InterfaceError(
                    "pool is being initialized, but not yet ready: likely there "
                    "is a race between creating a pool and using it"
                )
            raise asyncpg.InterfaceError("pool is not initialized")
        try:
            conn = await self._acquire_current(timeout)
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

    async def _acquire_current(self, timeout: float | None) -> Any:
        """Acquire a connection opened since the last :meth:`expire_connections`."""
        limit = WAIT_FOREVER if timeout is None else timeout
        deadline = asyncio.get_running_loop().time() + limit
        conn = await self.pool.acquire(timeout=limit)
        while self._is_expired(conn):
            await self._retire(conn)
            left = max(0.0, deadline - asyncio.get_running_loop().time())
            conn = await self.pool.acquire(timeout=left)
        return conn

    def _is_expired(self, conn: Any) -> bool:
        return self._born.get(conn, self._generation) < self._generation

    async def _retire(self, conn: Any) -> None:
        """Close an expired connection checked out of ``self.pool``, out of it."""
        if self.pool._take_out(conn, None, "lifetime"):
            try:
                await conn.close(timeout=RETIRE_TIMEOUT)
            except Exception:
                conn.terminate()
        else:  # not the pool's any more (terminated meanwhile)
            conn.terminate()

    async def expire_connections(self) -> None:
        """Replace every open connection: idle ones at their next acquire,
        acquired ones when they are released (as asyncpg's)."""
        self._generation += 1

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
            if _is_member(self._conns, connection):
                return  # released already: nothing to do, as in asyncpg
            raise asyncpg.InterfaceError(
                f"Pool.release() received invalid connection: {connection!r} "
                "is not a member of this pool"
            ) from None
        conn = connection
        try:
            # asyncpg's own release step: warn about listeners left behind,
            # and make the borrower's transaction, cursor and
            # prepared-statement objects refuse further use ("released back
            # to the pool").
            conn._on_release()
            if self._is_expired(conn):
                await self._retire(conn)
            elif timeout is None:
                await self.pool.release(conn)
            else:
                # Cancelled midway, poolkeeper closes the connection.
                await asyncio.wait_for(self.pool.release(conn), timeout)
        finally:
            self._out.returned()

    # -- sizes -------------------------------------------------------------------

    def get_size(self) -> int:
        """Return the number of open connections (idle and in use)."""
        return self.pool.stats().size

    def get_idle_size(self) -> int:
        """Return the number of idle connections."""
        return self.pool.stats().idle

    def get_init_size(self) -> int:
        """Return the number of connections initialisation opens."""
        return self._init_size

    def get_min_size(self) -> int:
        """Return the minimum number of connections kept open."""
        return self._min_size

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


def _is_member(conns: weakref.WeakSet[Any], conn: Any) -> bool:
    try:
        return conn in conns
    except TypeError:  # not a connection (no weak reference to it)
        return False


def _check_sizes(init_size: int, min_size: int, max_size: int) -> None:
    """Refuse the sizes asyncpg refuses, with asyncpg's messages."""
    if max_size <= 0:
        raise ValueError("max_size is expected to be greater than zero")
    if min_size < 0:
        raise ValueError("min_size is expected to be greater or equal to zero")
    if min_size > max_size:
        raise ValueError("min_size is greater than max_size")
    if init_size < 0:
        raise ValueError("init_size is expected to be greater or equal to zero")
    if init_size > max_size:
        raise ValueError("init_size is greater than max_size")
    if init_size < min_size:
        raise ValueError("init_size is smaller than min_size")


async def _default_reset(conn: Any) -> None:
    await conn.reset()
