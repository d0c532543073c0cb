"""SQLAlchemy pool classes backed by poolkeeper.

Use :class:`Pool` with :func:`sqlalchemy.create_engine` and :class:`AsyncPool`
with :func:`sqlalchemy.ext.asyncio.create_async_engine`::

    from sqlalchemy import create_engine
    from poolkeeper.sqlalchemy import Pool

    engine = create_engine(
        "postgresql+psycopg://user@host/db",
        poolclass=Pool,
        pool_size=10,  # connections kept idle, as QueuePool's
        max_overflow=20,  # max_size = pool_size + max_overflow
        pool_recycle=3600,  # poolkeeper max_lifetime
        pool_pre_ping=True,  # SQLAlchemy's own pre-ping
    )

How it fits together. SQLAlchemy keeps one ``_ConnectionRecord`` per DB-API
connection and fires its pool events (``connect``, ``checkout``, ``checkin``,
``reset``, ``invalidate``, ``close``) from that record and from the per-checkout
proxy it builds. poolkeeper keeps the *driver* connections. A checkout that
finds no idle connection while the pool has room creates a record in the
caller's own thread (or greenlet), as QueuePool does, and adds its driver
connection to the poolkeeper pool; otherwise it borrows one from poolkeeper
(waiting up to ``pool_timeout``) and returns the record that owns it. Sizing,
waiting, timeouts, lifetimes and ``stats()`` are poolkeeper's; engine
semantics (reset on return, pre-ping, invalidation, disconnect handling) stay
SQLAlchemy's.

SQLAlchemy expectations and how they are met:

- *Connect errors* happen in the caller, so the engine gets the dialect's own
  exception at once (``OperationalError``, ``ArgumentError`` for a bad
  ``isolation_level``), wraps it as usual and fires ``handle_error``.
- *Growth*: nothing is opened ahead of demand (poolkeeper ``min_size`` 0
  unless ``min_size=`` is given); up to ``pool_size`` returned connections
  are kept idle and the overflow is closed as it comes back, as QueuePool
  does. ``size()``, ``checkedin()``, ``checkedout()``, ``overflow()`` and
  ``status()`` answer as QueuePool's.
- *First connect*: until one connection has been made (and the dialect's
  first-connect initialisation has run on it), connects run one at a time,
  so every connection sees what ``initialize()`` registered (psycopg's
  HSTORE adapter, say).
- *Invalidation*: a connection SQLAlchemy closes (hard invalidation, failed
  reset) leaves the poolkeeper pool when it comes back, even for a driver
  that cannot say it is closed. A soft invalidation, or the pool-wide
  invalidation SQLAlchemy performs after a disconnect error, marks records
  older than a timestamp; such a record is closed and replaced at its next
  checkout.
- ``pool_pre_ping`` is SQLAlchemy's own: a disconnect is replaced, another
  error propagates, ``handle_error`` fires with ``is_pre_ping=True``.
- ``pool_recycle`` maps to poolkeeper's ``max_lifetime`` (with jitter, retired
  in the background rather than at checkout).
- ``pool_timeout``: a checkout that times out raises
  :class:`sqlalchemy.exc.TimeoutError` chained to
  :class:`poolkeeper.PoolTimeout`; ``pool_timeout=0`` still connects when
  the pool has room.
- ``Pool.dispose()`` closes the poolkeeper pool (connections still checked
  out are closed when they come back) and puts a new, empty one in its
  place, so the pool stays usable, as QueuePool does; ``Engine.dispose()``
  also replaces the whole pool (:meth:`Pool.recreate`).

Limitations: connections poolkeeper retires by itself (lifetime, idle time,
failed background check) are closed without SQLAlchemy's ``close`` event, and
``pool_use_lifo`` is not supported (poolkeeper serves waiters first-in,
first-out and reuses the most recently returned connection). A connection
taken out with ``detach()`` leaves the poolkeeper pool at once (counted in
``closed_by_reason["detached"]``; its caller closes it), so its slot is free
for a new connection, as with QueuePool. The caller-side connect and the closing of returned connections use the pool's
private ``_open_for_caller()`` and ``_take_out()``: this module ships with
poolkeeper and changes with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

from sqlalchemy import exc as sa_exc
from sqlalchemy.pool import Pool as _SAPool
from sqlalchemy.pool.base import (
    ConnectionPoolEntry,
    _AsyncConnDialect,
    _ConnectionRecord,
)
from sqlalchemy.util.concurrency import greenlet_spawn, in_greenlet

import poolkeeper
from poolkeeper._sqlalchemy_adapter import (
    DEFAULT_MAX_OVERFLOW,
    DEFAULT_POOL_SIZE,
    Adapter,
    translate_options,
)

__all__ = ["AsyncPool", "Pool"]

try:
    from sqlalchemy.util.concurrency import await_ as _await
except ImportError:  # SQLAlchemy 2.0 only has the older name
    from sqlalchemy.util.concurrency import await_only as _await


class _PoolkeeperPool(_SAPool):
    """What :class:`Pool` and :class:`AsyncPool` share (construction, bookkeeping)."""

    _pk_is_async: ClassVar[bool] = False

    def __init__(
        self,
        creator: Any,
        pool_size: int = DEFAULT_POOL_SIZE,
        max_overflow: int = DEFAULT_MAX_OVERFLOW,
        timeout: float = 30.0,
        recycle: int = -1,
        pre_ping: bool = False,
        min_size: int | None = None,
        max_size: int | None = None,
        max_lifetime: float | None = 3600.0,
        max_idle: float | None = 600.0,
        max_uses: int | None = None,
        max_waiting: int = 0,
        name: str | None = None,
        pool_options: dict[str, Any] | None = None,
        **kw: Any,
    ) -> None:
        """Create the pool; SQLAlchemy's ``create_engine`` passes these for you.

        Args:
            creator: The DB-API connect function the engine builds.
            pool_size: Returned connections kept idle at most (more are closed
                as they come back, as QueuePool does); 0 keeps them all.
                Default 5.
            max_overflow: Extra connections allowed above ``pool_size``; the
                pool's ``max_size`` is ``pool_size + max_overflow`` unless
                ``max_size`` is given. Default 10. -1 (unlimited) is refused.
            timeout: Seconds a checkout waits (``pool_timeout``). Default 30.
            recycle: ``pool_recycle`` seconds; when positive it sets
                ``max_lifetime``. Default -1 (poolkeeper's ``max_lifetime``).
            pre_ping: ``pool_pre_ping``: SQLAlchemy pings each connection on
                checkout with the dialect's ``do_ping`` and replaces it after
                a disconnect.
            min_size: poolkeeper ``min_size``: connections opened ahead of
                demand and kept open. Default 0 (lazy, as QueuePool).
            max_size: poolkeeper ``max_size`` (overrides the sum above).
            max_lifetime: Seconds before a connection is retired; None: never.
            max_idle: Seconds an idle connection above ``min_size`` is kept.
            max_uses: Checkouts after which a connection is retired.
            max_waiting: Callers allowed to wait at once (0: no limit).
            name: The poolkeeper pool name (default: ``pool_logging_name`` or
                a generated one).
            pool_options: Any other poolkeeper constructor arguments
                (``max_connecting``, ``reconnect_min``, ...).
            **kw: SQLAlchemy ``Pool`` arguments (``echo``, ``logging_name``,
                ``reset_on_return``, ``events``, ``dialect``, ``_dispatch``).

        Raises:
            poolkeeper.ConfigError: A size or time is out of range.
        """
        # pool_pre_ping is SQLAlchemy's own (in _ConnectionFairy._checkout):
        # its handle_error(is_pre_ping=True), disconnect detection and
        # error propagation are what engines expect.
        super().__init__(creator, recycle=-1, pre_ping=pre_ping, **kw)
        self._pk_args: dict[str, Any] = {
            "pool_size": pool_size,
            "max_overflow": max_overflow,
            "min_size": min_size,
            "max_size": max_size,
            "timeout": timeout,
            "recycle": recycle,
            "max_lifetime": max_lifetime,
            "max_idle": max_idle,
            "max_uses": max_uses,
            "max_waiting": max_waiting,
            "name": name,
            "pool_options": pool_options,
        }
        self._pk_pre_ping = pre_ping
        self._pk_start(
            translate_options(
                **{**self._pk_args, "name": name or kw.get("logging_name")}
            )
        )

    def _pk_start(self, options: dict[str, Any]) -> None:
        """Make the poolkeeper pool from the translated ``options``."""
        pool_size = self._pk_args["pool_size"]
        self._pk_max_size: int = options["max_size"]
        # QueuePool's pool_size=0 is an unbounded queue: every connection kept.
        self._pk_keep_idle = pool_size if pool_size > 0 else self._pk_max_size
        self._adapter = Adapter(self._pk_is_async)
        # Until one connection (and the dialect's first-connect
        # initialisation) has succeeded, connects run one at a time.
        self._pk_initialised = False
        self._pk_options = options
        self._pk = self._make_pool(options)

    def _make_pool(self, options: dict[str, Any]) -> Any:
        raise NotImplementedError

    @property
    def poolkeeper_pool(self) -> Any:
        """The poolkeeper pool behind this SQLAlchemy pool (for ``stats()``)."""
        return self._pk

    def _new_record_connection(self) -> Any:
        """Create a SQLAlchemy record (firing connect events); return its driver connection."""
        if self._pk_initialised:
            record = _ConnectionRecord(self)
        else:
            # The dialect's first-connect initialisation (server version,
            # psycopg's HSTORE adapter, ...) shapes the connections opened
            # after it: none is opened, let alone handed out, before it ends.
            with self._first_connect_guard():
                record = _ConnectionRecord(self)
                self._pk_initialised = True
        return self._adapter.register(record, self._pk_max_size)

    def _first_connect_guard(self) -> Any:
        raise NotImplementedError

    def _driver_close(self, pk: Any, conn: Any) -> None:
        raise NotImplementedError

    def _leave(self, conn: Any, pk: Any, keep_idle: int | None) -> bool:
        """Take ``conn`` out of ``pk`` instead of back in (``Pool._take_out``).

        Returns whether it left; then the adapter forgets it.
        """
        if not pk._take_out(conn, keep_idle):
            return False
        self._adapter.forget(conn)
        return True

    def _shed(self, record: ConnectionPoolEntry, held: tuple[Any, Any]) -> bool:
        """Close a returned connection rather than keep it, when it should be.

        A connection SQLAlchemy closed (invalidated, failed reset) leaves the
        pool; so does one returning while ``pool_size`` are idle already, as
        QueuePool closes its overflow. Returns True when ``held`` was dealt
        with; False: give it back to its poolkeeper pool as usual.
        """
        conn, pk = held
        if pk is not self._pk:
            return False  # from a disposed pool: closed when given back
        if self._adapter.is_closed(conn):
            return self._leave(conn, pk, None)
        if self._leave(conn, pk, self._pk_keep_idle):
            record.close()  # SQLAlchemy's close, with its close event
            return True
        return False

    def _close_connection(self, connection: Any, *, terminate: bool = False) -> None:
        # Remembered so that a closed connection is never taken for a
        # detached one, nor handed out again, whatever the driver tells.
        super()._close_connection(connection, terminate=terminate)
        adapter = self._adapter
        with adapter.lock:
            for conn in (connection, getattr(connection, "driver_connection", None)):
                # Only the pool's own connections (so the set stays bounded).
                if conn is not None and id(conn) in adapter.records:
                    adapter.closed.add(id(conn))

    def _is_stale(self, record: _ConnectionRecord) -> bool:
        # The same test SQLAlchemy's record applies at checkout; doing it here
        # keeps SQLAlchemy from reconnecting behind poolkeeper's back.
        started = record.starttime
        return self._invalidate_time > started or record._soft_invalidate_time > started

    def _claim(self, conn: Any) -> _ConnectionRecord | None:
        """Return the fresh record owning ``conn``; or None after retiring ``conn``.

        A connection whose record was invalidated (pool-wide or soft) or
        that lost its record (closed by SQLAlchemy behind a driver that
        cannot say so) is closed and retired; the caller takes another.
        """
        record = self._adapter.record_for(conn)
        if record is not None and record.driver_connection is conn:
            if not self._is_stale(record):
                self._adapter.hold(record, conn, self._pk)
                return record
            record.close()
        pk = self._pk
        if record is None or record.driver_connection is not None:
            # No record, or one that moved on to another connection: nobody
            # closed this one yet.
            with contextlib.suppress(Exception):
                self._driver_close(pk, conn)
        if not self._leave(conn, pk, None):
            raise poolkeeper.PoolError(
                f"SQLAlchemy pool {pk.name!r}: connection {conn!r} is not checked "
                "out from its poolkeeper pool",
                pool_name=pk.name,
            )
        return None

    def _recreate_args(self) -> dict[str, Any]:
        return {
            **self._pk_args,
            "pre_ping": self._pk_pre_ping,
            "echo": self.echo,
            "logging_name": self._orig_logging_name,
            "reset_on_return": self._reset_on_return,
            "_dispatch": self.dispatch,
            "dialect": self._dialect,
        }

    def recreate(self) -> _PoolkeeperPool:
        """Return a new, unopened pool of the same class and settings."""
        self.logger.info("Pool recreating")
        return type(self)(self._creator, **self._recreate_args())

    def size(self) -> int:
        """``pool_size``: the connections kept idle at most (as ``QueuePool.size()``)."""
        return int(self._pk_args["pool_size"])

    def checkedin(self) -> int:
        """Idle connections in the pool (as ``QueuePool.checkedin()``)."""
        return self._pk.stats().idle  # type: ignore[no-any-return]

    def checkedout(self) -> int:
        """Connections checked out now (as ``QueuePool.checkedout()``)."""
        return self._pk.stats().in_use  # type: ignore[no-any-return]

    def overflow(self) -> int:
        """Open connections beyond ``pool_size``, negative below it (as ``QueuePool.overflow()``)."""
        if not self.size():
            return 0  # pool_size=0: no overflow, as QueuePool says
        return self._pk.stats().size - self.size()  # type: ignore[no-any-return]

    def timeout(self) -> float:
        """``pool_timeout`` in seconds."""
        return float(self._pk_args["timeout"])

    def status(self) -> str:
        """Describe the pool as ``QueuePool.status()`` does, plus poolkeeper's view."""
        s = self._pk.stats()
        return (
            f"Pool size: {self.size()}  Connections in pool: {s.idle} "
            f"Current Overflow: {self.overflow()} Current Checked out "
            f"connections: {s.in_use} (poolkeeper pool {self._pk.name!r}: "
            f"size {s.size}/{s.max_size}, min {s.min_size}, waiting {s.waiting})"
        )

    @staticmethod
    def _pk_run(value: Any) -> Any:
        """Finish a call on the poolkeeper pool: as is for the thread pool;
        AsyncPool awaits it from SQLAlchemy's greenlet."""
        return value

    def _do_get(self) -> ConnectionPoolEntry:
        run = self._pk_run
        self._release_orphans()
        pk = self._pk
        # A stale record is closed and another connection taken; the bound
        # only guards against a pool that keeps producing stale connections.
        for _ in range(self._pk_max_size + 1):
            if not pk._opened:
                run(pk.open())
            # QueuePool's growth: a checkout that finds no idle connection
            # and room in the pool connects in the caller, so a connect
            # error (the driver's, the dialect's, first-connect
            # initialisation's) reaches it at once for the engine to wrap.
            run(pk._open_for_caller())
            try:
                conn = run(pk.acquire())
            except poolkeeper.PoolTimeout as exc:
                raise self._timeout_error(exc) from exc
            record = self._claim(conn)
            if record is not None:
                return record
        raise poolkeeper.PoolError(
            f"pool {pk.name!r}: every connection was invalidated",
            pool_name=pk.name,
        )

    def _take_detached(self) -> None:
        """Free at once the slots of connections SQLAlchemy detached.

        ``detach()`` hands the still-open connection to its caller for good;
        as with QueuePool, the pool may open another in its place (the
        connection leaves poolkeeper's pool as closed, reason
        ``"detached"``; its caller closes it).
        """
        adapter = self._adapter
        with adapter.lock:
            detached, adapter.detached = adapter.detached, []
        for conn, pk in detached:
            pk._take_out(conn, None, "detached")

    def _release_orphans(self) -> None:
        self._take_detached()
        for conn, pk in self._adapter.closed_orphans():
            # Closed by its owner: out of the pool without a second close.
            if not self._leave(conn, pk, None):
                self._pk_run(pk.release(conn))

    def _timeout_error(self, exc: poolkeeper.PoolTimeout) -> sa_exc.TimeoutError:
        return sa_exc.TimeoutError(f"{exc} (SQLAlchemy pool_timeout)", code="3o7r")


class Pool(_PoolkeeperPool):
    """A SQLAlchemy pool for ``create_engine(..., poolclass=Pool)``, run by :class:`poolkeeper.Pool`.

    A checkout that finds no idle connection and room in the pool opens one
    in the caller's thread through the engine's ``creator``, as QueuePool
    does; see the module documentation for the mapping of ``pool_size``,
    ``max_overflow``, ``pool_timeout``, ``pool_recycle`` and
    ``pool_pre_ping``.
    """

    _is_asyncio = False
    _pk_is_async = False

    def _make_pool(self, options: dict[str, Any]) -> poolkeeper.Pool[Any]:
        self._pk_first_lock = threading.Lock()
        return poolkeeper.Pool(self._new_record_connection, **options)

    @contextmanager
    def _first_connect_guard(self) -> Iterator[None]:
        with self._pk_first_lock:
            yield

    def _driver_close(self, pk: Any, conn: Any) -> None:
        pk._driver.close(conn)

    def _do_return_conn(self, record: ConnectionPoolEntry) -> None:
        held = self._adapter.unhold(record)
        if held is None:
            self._take_detached()
            return
        conn, pk = held
        if not self._shed(record, held):
            pk.release(conn)

    def dispose(self) -> None:
        """Close every idle connection now and checked-out ones on return.

        As with QueuePool, the pool stays usable: the poolkeeper pool behind
        it is closed and a new, empty one takes its place.
        """
        old, self._pk = self._pk, self._make_pool(self._pk_options)
        old.close()
        self.logger.info("Pool disposed. %s", self.status())


class AsyncPool(_PoolkeeperPool):
    """A SQLAlchemy pool for ``create_async_engine(..., poolclass=AsyncPool)``.

    Backed by :class:`poolkeeper.AsyncPool`. SQLAlchemy runs its pool code in
    a greenlet on the event loop; checkouts and returns await the poolkeeper
    pool from there. A checkout that finds no idle connection and room in
    the pool opens one itself, in that greenlet, as AsyncAdaptedQueuePool
    does; connections poolkeeper opens on its own (``min_size``, replacements)
    are created by its background tasks inside a fresh greenlet, so the
    asyncio dialect's connect function (which awaits the driver) works as
    usual.
    """

    _is_asyncio = True
    _pk_is_async = True

    @staticmethod
    def _pk_run(value: Any) -> Any:
        return _await(value)

    _dialect = _AsyncConnDialect()  # until the engine sets its own dialect

    def _make_pool(self, options: dict[str, Any]) -> poolkeeper.AsyncPool[Any]:
        self._pk_first_lock: asyncio.Lock | None = None
        return poolkeeper.AsyncPool(self._connect, **options)

    @contextmanager
    def _first_connect_guard(self) -> Iterator[None]:
        # Connects run in greenlets on the event loop's thread: a thread lock
        # would block the loop, so an asyncio lock is awaited through the
        # greenlet bridge.
        if self._pk_first_lock is None:
            self._pk_first_lock = asyncio.Lock()
        lock = self._pk_first_lock
        _await(lock.acquire())
        try:
            yield
        finally:
            lock.release()

    async def _connect(self) -> Any:
        return await greenlet_spawn(self._new_record_connection)

    def _driver_close(self, pk: Any, conn: Any) -> None:
        _await(pk._driver.close(conn))

    def _do_return_conn(self, record: ConnectionPoolEntry) -> None:
        held = self._adapter.unhold(record)
        if held is None:
            if in_greenlet():
                # Else (garbage collection) at the next checkout.
                self._take_detached()
            return
        conn, pk = held
        if in_greenlet():
            if not self._shed(record, held):
                _await(pk.release(conn))
        else:
            # Garbage collection of an unreturned connection runs outside the
            # greenlet, where nothing can be awaited; SQLAlchemy terminates
            # the connection right after, and the next checkout gives the
            # (then closed) connection back to poolkeeper.
            with self._adapter.lock:
                self._adapter.orphans.append(held)

    def dispose(self) -> None:
        """Close idle connections now, checked-out ones on return; stay usable.

        Called by ``await AsyncEngine.dispose()``; as with QueuePool the pool
        can be used again: a new, empty poolkeeper pool takes the old one's
        place.
        """
        old, self._pk = self._pk, self._make_pool(self._pk_options)
        _await(old.close())
        self.logger.info("Pool disposed. %s", self.status())
