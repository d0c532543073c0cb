"""psycopg2's ``psycopg2.pool`` classes, backed by a :class:`poolkeeper.Pool`.

Replace ``from psycopg2 import pool`` with
``from poolkeeper.compat import psycopg2 as pool`` and existing
``SimpleConnectionPool(minconn, maxconn, dsn)`` code keeps working, with
poolkeeper underneath: broken connections are detected and replaced,
connections are retired after ``max_lifetime``/``max_idle``, and
``pool.pool.stats()`` reports what the pool is doing.

What matches psycopg2:

- The constructor ``(minconn, maxconn, *args, **kwargs)``: ``args`` and
  ``kwargs`` go to ``psycopg2.connect`` unchanged (a DSN string, a URI or
  keywords), and ``minconn`` connections are opened before it returns (a
  connection error is raised from the constructor).
- ``getconn(key=None)``, ``putconn(conn, key=None, close=False)``,
  ``closeall()``, the ``closed``, ``minconn`` and ``maxconn`` attributes, and
  :class:`PoolError` (psycopg2's own class) raised when the pool is exhausted
  or closed, or when ``putconn`` gets a connection the pool did not hand out.
- Keyed connections: ``getconn(key)`` returns the connection already held
  under ``key`` if there is one.
- ``putconn`` rolls back an open transaction; ``close=True`` closes the
  connection instead of keeping it.

What differs (on purpose):

- Exhaustion: by default ``getconn()`` raises :class:`PoolError` at once when
  ``maxconn`` connections are checked out, as psycopg2 does. Pass
  ``timeout=`` (seconds) to the constructor, or to one ``getconn`` call, to
  wait that long for a connection to come back instead.
- Idle connections beyond ``minconn`` are kept until they have been idle for
  ``max_idle`` seconds (default 600) rather than closed on ``putconn``.
- Both classes are thread-safe; ``SimpleConnectionPool`` is simply the same
  pool under psycopg2's other name.
- When a new connection is needed and the server is unreachable, poolkeeper
  retries in the background; ``getconn()`` raises the last connection error
  after ``connect_wait`` seconds (default 10) instead of at the first failure.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Hashable, Mapping
from typing import Any

import psycopg2
from psycopg2.pool import PoolError

from poolkeeper._sync.pool import Pool
from poolkeeper.errors import PoolClosed, PoolTimeout, TooManyWaiters

__all__ = [
    "AbstractConnectionPool",
    "PoolError",
    "SimpleConnectionPool",
    "ThreadedConnectionPool",
]

#: Seconds ``getconn()`` waits for a new connection to be opened when the pool
#: is not exhausted (it has to connect) and no ``timeout`` was given.
DEFAULT_CONNECT_WAIT = 10.0

#: poolkeeper arguments the psycopg2 constructor already decides.
_RESERVED_OPTIONS = frozenset({"connect", "min_size", "max_size", "timeout"})


class AbstractConnectionPool:
    """A psycopg2-style pool of psycopg2 connections on top of :class:`poolkeeper.Pool`.

    Args:
        minconn: Connections opened at once and kept open (``min_size``).
        maxconn: Most connections checked out at once (``max_size``).
        *args: Positional arguments for ``psycopg2.connect`` (a DSN or URI).
        timeout: Seconds ``getconn()`` waits for a connection when ``maxconn``
            are checked out; None (default) raises :class:`PoolError` at once,
            as psycopg2 does.
        connect_wait: Seconds ``getconn()`` waits for a new connection to be
            opened when it has to connect (default 10); the pool retries
            failed connects meanwhile.
        pool_options: Further :class:`poolkeeper.Pool` arguments
            (``max_lifetime``, ``max_idle``, ``check``, ``name``, ...).
        **kwargs: Keyword arguments for ``psycopg2.connect``.

    Raises:
        psycopg2.OperationalError: One of the first ``minconn`` connections
            could not be opened (the driver's own error).
        ValueError: ``minconn``/``maxconn`` are out of range, or
            ``pool_options`` repeats an argument decided here.
    """

    def __init__(
        self,
        minconn: int,
        maxconn: int,
        *args: Any,
        timeout: float | None = None,
        connect_wait: float = DEFAULT_CONNECT_WAIT,
        pool_options: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        options = dict(pool_options or {})
        clash = sorted(_RESERVED_OPTIONS & options.keys())
        if clash:
            raise ValueError(
                f"pool_options cannot set {clash}: use minconn, maxconn, timeout "
                "and connect_wait"
            )
        self.minconn = minconn
        self.maxconn = maxconn
        self._timeout = timeout
        self._connect_wait = connect_wait
        self._lock = threading.Lock()
        self._used: dict[Hashable, Any] = {}
        self._rused: dict[int, Hashable] = {}
        self._pending = 0
        self._closed = False
        connect: Callable[[], Any] = _connector(args, kwargs)
        self.pool: Pool[Any] = Pool(
            connect,
            min_size=minconn,
            max_size=maxconn,
            timeout=connect_wait,
            **options,
        )
        """The :class:`poolkeeper.Pool` doing the work (stats, events, checks)."""
        # psycopg2's own connections, lent by getconn(): their `with` keeps
        # psycopg2's meaning, so the pool's warning about `with acquire()`
        # on them does not concern this pool's users.
        self.pool._held.warn_unaware = False
        try:
            self.pool.open(wait=minconn > 0)
        except PoolTimeout as exc:
            # psycopg2 connects in the constructor: raise what connect raised.
            if exc.__cause__ is None:
                raise
            raise exc.__cause__ from None

    @property
    def closed(self) -> bool:
        """Whether :meth:`closeall` has been called."""
        return self._closed

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._used)}/{self.maxconn} used"
        return f"<{type(self).__name__} {self.pool.name!r} {state}>"

    def getconn(
        self, key: Hashable | None = None, *, timeout: float | None = None
    ) -> Any:
        """Check out a connection, or return the one already held under ``key``.

        Args:
            key: Hold the connection under this key; a second ``getconn(key)``
                returns the same connection. None: a fresh private key.
            timeout: Seconds to wait when the pool is exhausted, overriding
                the constructor's ``timeout`` for this call.

        Returns:
            A psycopg2 connection.

        Raises:
            PoolError: The pool is closed, or ``maxconn`` connections are
                checked out (at once, or after ``timeout`` seconds).
            psycopg2.OperationalError: A new connection was needed and could
                not be opened within ``connect_wait`` seconds.
        """
        wait = self._timeout if timeout is None else timeout
        with self._lock:
            self._check_open()
            if key is None:
                key = object()
            elif key in self._used:
                return self._used[key]
            exhausted = len(self._used) + self._pending >= self.maxconn
            if exhausted and wait is None:
                raise PoolError("connection pool exhausted")
            self._pending += 1
        try:
            # Not exhausted: a connection is idle or will be opened for us.
            conn = self._checkout(wait if exhausted else None)
        finally:
            with self._lock:
                self._pending -= 1
        with self._lock:
            # Another thread may have closed the pool or taken ``key`` meanwhile.
            closed = self._closed
            held = self._used.get(key)
            if not closed and held is None:
                self._used[key] = conn
                self._rused[id(conn)] = key
                return conn
        self.pool.release(conn)
        if closed:
            raise PoolError("connection pool is closed")
        return held

    def _checkout(self, wait: float | None) -> Any:
        """Acquire from the pool: ``wait`` seconds for a busy connection, or None
        to wait up to ``connect_wait`` for a new one."""
        try:
            return self.pool.acquire(
                timeout=self._connect_wait if wait is None else wait
            )
        except PoolClosed as exc:
            raise PoolError("connection pool is closed") from exc
        except TooManyWaiters as exc:
            raise PoolError(f"connection pool exhausted: {exc}") from exc
        except PoolTimeout as exc:
            cause = exc.__cause__
            if wait is None and isinstance(cause, psycopg2.Error):
                # psycopg2 would have raised the connect error itself.
                raise cause from None
            raise PoolError(f"connection pool exhausted: {exc}") from exc

    def putconn(
        self, conn: Any, key: Hashable | None = None, close: bool = False
    ) -> None:
        """Give back a connection taken with :meth:`getconn`.

        An open transaction is rolled back. A broken connection is closed and
        replaced later.

        Args:
            conn: The connection.
            key: The key it was taken under (default: looked up).
            close: Close the connection instead of keeping it in the pool.

        Raises:
            PoolError: The pool is closed, or ``conn`` is not checked out from
                it ("trying to put unkeyed connection").
        """
        with self._lock:
            self._check_open()
            if key is None:
                key = self._rused.get(id(conn))
            if key is None or key not in self._used or self._used[key] is not conn:
                raise PoolError("trying to put unkeyed connection")
            del self._used[key]
            del self._rused[id(conn)]
        if close:
            # A closed connection counts as broken: the pool discards it.
            with contextlib.suppress(Exception):
                conn.close()
        self.pool.release(conn)

    def closeall(self) -> None:
        """Close every connection, including those still checked out, and the pool.

        Raises:
            PoolError: The pool is already closed.
        """
        with self._lock:
            self._check_open()
            self._closed = True
            held = list(self._used.values())
            self._used.clear()
            self._rused.clear()
        for conn in held:
            with contextlib.suppress(Exception):
                conn.close()
            self.pool.release(conn)
        self.pool.close()

    def _check_open(self) -> None:
        if self._closed:
            raise PoolError("connection pool is closed")


class SimpleConnectionPool(AbstractConnectionPool):
    """psycopg2's ``SimpleConnectionPool``, backed by poolkeeper (and thread-safe)."""


class ThreadedConnectionPool(AbstractConnectionPool):
    """psycopg2's ``ThreadedConnectionPool``, backed by poolkeeper."""


def _connector(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Callable[[], Any]:
    def connect() -> Any:
        return psycopg2.connect(*args, **kwargs)

    return connect
