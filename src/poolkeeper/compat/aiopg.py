"""aiopg's ``create_pool()``, backed by a :class:`poolkeeper.AsyncPool`.

Replace ``aiopg.create_pool(...)`` with
``poolkeeper.compat.aiopg.create_pool(...)`` and code written for aiopg's
pool keeps working::

    async with create_pool(dsn, minsize=1, maxsize=10) as pool:
        async with pool.acquire() as conn:
            async with conn.cursor() as cur:
                await cur.execute("SELECT 1")
                print(await cur.fetchone())

What matches aiopg:

- ``create_pool(dsn, *, minsize, maxsize, timeout, pool_recycle,
  enable_json, enable_hstore, enable_uuid, echo, on_connect, **kwargs)``: the
  remaining keyword arguments go to ``aiopg.connect``. The result is awaited
  (``pool = await create_pool(...)``) or entered (``async with``), and opens
  ``minsize`` connections first; a connect error is raised from it.
- ``pool.acquire()`` (awaited, or ``async with``), ``pool.release(conn)``,
  ``pool.cursor()`` (``with (await pool.cursor()) as cur``, or
  ``async with pool.cursor() as cur``), ``close()`` then ``wait_closed()``,
  ``terminate()``, and the ``minsize``, ``maxsize``, ``size``,
  ``freesize``, ``timeout``, ``closed`` and ``echo`` attributes.
- ``acquire()`` hands out aiopg's own ``Connection``.

What differs (see docs/DRIVERS.md, "Drop-in compatibility"):

- A connection released inside a transaction is rolled back and kept, where
  aiopg warns (``ResourceWarning``) and closes it.
- ``timeout`` bounds the wait for a free connection (a
  :class:`poolkeeper.PoolTimeout`, which is a ``TimeoutError``) as well as
  aiopg's connect and queries.
- ``pool_recycle`` maps to poolkeeper's ``max_lifetime``; aiopg's default
  (-1, never) keeps poolkeeper's (3600 s): pass
  ``pool_options={"max_lifetime": None}`` to turn that off.
- Connections are validated before checkout and replaced when broken.
- No ``clear()``: idle connections are closed by ``max_idle`` (and
  ``max_lifetime``), not on request.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Generator, Mapping
from types import TracebackType
from typing import Any

import aiopg

from poolkeeper._async.pool import AsyncPool
from poolkeeper.compat._checkouts import Checkouts
from poolkeeper.errors import PoolClosed, PoolTimeout

__all__ = [
    "AcquireContext",
    "CursorContext",
    "CursorRequest",
    "Pool",
    "PoolContext",
    "create_pool",
]

#: aiopg's default timeout, seconds.
TIMEOUT = 60.0

#: poolkeeper arguments ``create_pool`` already decides.
_RESERVED_OPTIONS = frozenset({"connect", "min_size", "max_size", "timeout"})

OnConnect = Callable[[Any], Awaitable[None]]


def create_pool(
    dsn: str | None = None,
    *,
    minsize: int = 1,
    maxsize: int = 10,
    timeout: float = TIMEOUT,
    pool_recycle: float = -1.0,
    enable_json: bool = True,
    enable_hstore: bool = True,
    enable_uuid: bool = True,
    echo: bool = False,
    on_connect: OnConnect | None = None,
    pool_options: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> PoolContext:
    """Create an aiopg-style pool; await it or enter it with ``async with``.

    Args:
        dsn: libpq connection string or URI for ``aiopg.connect``.
        minsize: Connections opened before the pool is returned, and kept.
        maxsize: Most connections open at once.
        timeout: Seconds for aiopg's connect and queries, and for the wait
            for a free connection.
        pool_recycle: Seconds after which a connection is replaced
            (poolkeeper ``max_lifetime``); -1 keeps poolkeeper's default.
        enable_json: Passed to ``aiopg.connect``.
        enable_hstore: Passed to ``aiopg.connect`` (set False when the
            database has no hstore extension, as with aiopg).
        enable_uuid: Passed to ``aiopg.connect``.
        echo: Passed to ``aiopg.connect`` (log every query).
        on_connect: Coroutine function called once with each new connection
            (poolkeeper ``configure``).
        pool_options: Further :class:`poolkeeper.AsyncPool` arguments
            (``max_idle``, ``check``, ``name``, ``validate``, ...).
        **kwargs: Further keyword arguments for ``aiopg.connect``.

    Returns:
        A :class:`PoolContext`: ``pool = await create_pool(...)``, or
        ``async with create_pool(...) as pool`` (closed on exit).

    Raises:
        ValueError: ``minsize``/``maxsize`` are out of range, or
            ``pool_options`` sets what the other arguments decide.
    """
    if minsize < 0:
        raise ValueError("minsize should be zero or greater")
    if maxsize < minsize and maxsize != 0:
        raise ValueError("maxsize should be not less than minsize")
    options = dict(pool_options or {})
    clash = sorted(_RESERVED_OPTIONS & options.keys())
    if clash:
        raise ValueError(f"pool_options cannot set {clash}: use create_pool's")
    if pool_recycle > 0:
        options.setdefault("max_lifetime", pool_recycle)
    connect_kwargs = {
        "timeout": timeout,
        "enable_json": enable_json,
        "enable_hstore": enable_hstore,
        "enable_uuid": enable_uuid,
        "echo": echo,
        **kwargs,
    }
    pool = Pool(
        dsn,
        connect_kwargs,
        minsize=minsize,
        maxsize=maxsize,
        timeout=timeout,
        echo=echo,
        on_connect=on_connect,
        pool_options=options,
    )
    return PoolContext(pool)


class PoolContext:
    """What :func:`create_pool` returns: awaitable, or an async context manager."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    def __await__(self) -> Generator[Any, None, Pool]:
        return self._pool._open().__await__()

    async def __aenter__(self) -> Pool:
        return await self._pool._open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._pool.close()
        await self._pool.wait_closed()


class Pool:
    """An aiopg-style pool; build it with :func:`create_pool`.

    ``pool.pool`` is the :class:`poolkeeper.AsyncPool` underneath, for stats,
    events and health checks.
    """

    def __init__(
        self,
        dsn: str | None,
        connect_kwargs: dict[str, Any],
        *,
        minsize: int,
        maxsize: int,
        timeout: float,
        echo: bool,
        on_connect: OnConnect | None,
        pool_options: Mapping[str, Any],
    ) -> None:
        self._timeout = timeout
        self._echo = echo
        self._out = Checkouts()
        self._closing = False
        self._closed = False
        self._dropping: list[asyncio.Future[None]] = []

        async def connect() -> Any:
            return await aiopg.connect(dsn, **connect_kwargs)

        self.pool: AsyncPool[Any] = AsyncPool(
            connect,
            min_size=minsize,
            max_size=maxsize or max(minsize, 1),
            timeout=timeout,
            configure=on_connect,
            **pool_options,
        )
        """The :class:`poolkeeper.AsyncPool` doing the work."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} over {self.pool!r}>"

    async def _open(self) -> Pool:
        try:
            await self.pool.open(wait=True, timeout=self._timeout)
        except BaseException as exc:
            await self.pool.close()
            cause = exc.__cause__ if isinstance(exc, PoolTimeout) else None
            if cause is not None:
                raise cause from None
            raise
        return self

    # -- attributes --------------------------------------------------------------

    @property
    def echo(self) -> bool:
        """Whether connections log every query (``echo=`` of :func:`create_pool`)."""
        return self._echo

    @property
    def minsize(self) -> int:
        """Connections kept open."""
        return self.pool.stats().min_size

    @property
    def maxsize(self) -> int:
        """Most connections open at once."""
        return self.pool.stats().max_size

    @property
    def size(self) -> int:
        """Open connections, idle and in use."""
        return self.pool.stats().size

    @property
    def freesize(self) -> int:
        """Idle connections."""
        return self.pool.stats().idle

    @property
    def timeout(self) -> float:
        """Seconds for a connect, a query or the wait for a connection."""
        return self._timeout

    @property
    def closed(self) -> bool:
        """Whether :meth:`wait_closed` has finished."""
        return self._closed

    # -- acquire / release -------------------------------------------------------

    def acquire(self) -> AcquireContext:
        """Acquire a connection: ``await`` it, or use it with ``async with``.

        Raises:
            TimeoutError: No connection within ``timeout`` (a
                :class:`poolkeeper.PoolTimeout`).
            RuntimeError: The pool is closing or closed.
        """
        return AcquireContext(self)

    async def _acquire(self) -> Any:
        if self._closing:
            raise RuntimeError("Cannot acquire connection after closing pool")
        try:
            conn = await self.pool.acquire()
        except PoolClosed as exc:
            raise RuntimeError("Cannot acquire connection after closing pool") from exc
        self._out.add(conn)
        return conn

    def release(self, conn: Any) -> asyncio.Future[None]:
        """Give back a connection; awaiting the result is optional, as in aiopg.

        An open transaction is rolled back; a closed or broken connection is
        discarded.

        Raises:
            ValueError: ``conn`` was not acquired from this pool.
        """
        try:
            back = self._out.take_back(conn)
        except LookupError:
            raise ValueError(f"{conn!r} was not acquired from this pool") from None
        if not back:  # dropped by terminate()
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        returning = asyncio.ensure_future(self.pool.release(conn))
        returning.add_done_callback(lambda _: self._out.returned())
        return returning

    def cursor(
        self,
        name: str | None = None,
        cursor_factory: Any = None,
        scrollable: bool | None = None,
        withhold: bool = False,
        *,
        timeout: float | None = None,
    ) -> CursorRequest:
        """Acquire a connection and open a cursor on it.

        ``async with pool.cursor() as cur:``, or aiopg's older
        ``with (await pool.cursor()) as cur:``; either closes the cursor and
        releases the connection on exit.
        """
        options = {
            "name": name,
            "cursor_factory": cursor_factory,
            "scrollable": scrollable,
            "withhold": withhold,
            "timeout": timeout,
        }
        return CursorRequest(self, options)

    async def _cursor(self, options: dict[str, Any]) -> CursorContext:
        conn = await self._acquire()
        try:
            cur = await conn.cursor(**options)
        except BaseException:
            await self.release(conn)
            raise
        return CursorContext(self, conn, cur)

    # -- lifecycle ---------------------------------------------------------------

    def close(self) -> None:
        """Refuse new acquires; :meth:`wait_closed` then closes the connections."""
        self._closing = True

    def terminate(self) -> None:
        """Close every connection now, acquired ones included, then the pool.

        Releasing a terminated connection later does nothing. Await
        :meth:`wait_closed` to finish.
        """
        self.close()
        for conn in self._out.drop_all():
            conn.close()
            # The pool sees a closed connection and discards it.
            self._dropping.append(asyncio.ensure_future(self.pool.release(conn)))

    async def wait_closed(self) -> None:
        """Wait until every acquired connection is released, then close them all.

        Raises:
            RuntimeError: :meth:`close` (or :meth:`terminate`) was not called.
        """
        if self._closed:
            return
        if not self._closing:
            raise RuntimeError(".wait_closed() should be called after .close()")
        await self._out.all_back.wait()
        dropping, self._dropping = self._dropping, []
        await asyncio.gather(*dropping, return_exceptions=True)
        await self.pool.close()
        self._closed = True

    async def __aenter__(self) -> Pool:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
        await self.wait_closed()


class AcquireContext:
    """What :meth:`Pool.acquire` returns: awaitable, or an async context manager."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._conn: Any = None

    def __await__(self) -> Generator[Any, None, Any]:
        return self._pool._acquire().__await__()

    async def __aenter__(self) -> Any:
        self._conn = await self._pool._acquire()
        return self._conn

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._pool.release(conn)


class CursorRequest:
    """What :meth:`Pool.cursor` returns: awaitable, or an async context manager."""

    def __init__(self, pool: Pool, options: dict[str, Any]) -> None:
        self._pool = pool
        self._options = options
        self._context: CursorContext | None = None

    def __await__(self) -> Generator[Any, None, CursorContext]:
        return self._pool._cursor(self._options).__await__()

    async def __aenter__(self) -> Any:
        self._context = await self._pool._cursor(self._options)
        return self._context._cursor

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        context, self._context = self._context, None
        if context is not None:
            await context._finish()


class CursorContext:
    """What ``await pool.cursor()`` returns: a context manager over the cursor.

    On exit the cursor is closed and its connection released (in the
    background: ``with`` cannot await).
    """

    def __init__(self, pool: Pool, conn: Any, cursor: Any) -> None:
        self._pool = pool
        self._conn = conn
        self._cursor = cursor

    def __enter__(self) -> Any:
        return self._cursor

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._finish()

    def _finish(self) -> asyncio.Future[None]:
        try:
            self._cursor.close()
        except Exception:
            with contextlib.suppress(Exception):
                self._conn.close()
            raise
        finally:
            released = self._pool.release(self._conn)
        return released
