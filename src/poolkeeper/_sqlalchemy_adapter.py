"""Pieces of :mod:`poolkeeper.sqlalchemy` below its pool classes.

Owns: the translation of SQLAlchemy's pool arguments into poolkeeper's
(:func:`translate_options`) and the registry that ties poolkeeper's driver
connections to SQLAlchemy's connection records (:class:`Adapter`).

May not touch: the pool classes themselves (:mod:`poolkeeper.sqlalchemy`
imports this module, never the other way round).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from sqlalchemy.pool.base import ConnectionPoolEntry, _ConnectionRecord

import poolkeeper
from poolkeeper.drivers import ops_for_connection

# One logger for the integration, whichever of its modules logs.
logger = logging.getLogger("poolkeeper.sqlalchemy")

#: SQLAlchemy's QueuePool defaults, kept so an engine behaves the same size.
DEFAULT_POOL_SIZE = 5
DEFAULT_MAX_OVERFLOW = 10


def translate_options(
    *,
    pool_size: int,
    max_overflow: int,
    min_size: int | None,
    max_size: int | None,
    timeout: float,
    recycle: int,
    max_lifetime: float | None,
    max_idle: float | None,
    max_uses: int | None,
    max_waiting: int,
    name: str | None,
    pool_options: dict[str, Any] | None,
) -> dict[str, Any]:
    """Translate SQLAlchemy pool arguments into poolkeeper constructor arguments."""
    if max_size is None:
        if max_overflow < 0:
            raise poolkeeper.ConfigError(
                "max_overflow=-1 (unlimited) is not supported: poolkeeper always "
                "bounds the number of connections; pass max_size= instead"
            )
        max_size = pool_size + max_overflow
    if min_size is None:
        # QueuePool opens connections one checkout at a time and keeps up to
        # pool_size of them: nothing is opened ahead of demand.
        min_size = 0
    options: dict[str, Any] = {
        "min_size": min_size,
        "max_size": max_size,
        "timeout": timeout,
        # pool_recycle=-1 is SQLAlchemy's "never"; then poolkeeper's own
        # lifetime applies, which is what makes long-lived engines safe.
        "max_lifetime": float(recycle) if recycle > 0 else max_lifetime,
        "max_idle": max_idle,
        "max_uses": max_uses,
        "max_waiting": max_waiting,
        "name": name,
    }
    options.update(pool_options or {})
    return options


class Adapter:
    """Adapts poolkeeper's connection registry to SQLAlchemy's records.

    Holds the two maps the integration needs: driver connection -> record
    (filled when poolkeeper opens a connection) and record -> driver
    connection currently checked out (SQLAlchemy may clear
    ``record.dbapi_connection`` before giving the record back, so the checked
    out connection must be remembered separately).
    """

    def __init__(self, is_async: bool) -> None:
        self.is_async = is_async
        self.lock = threading.Lock()
        self.records: dict[int, _ConnectionRecord] = {}
        # id(record) -> (driver connection, the poolkeeper pool it came from:
        # dispose() replaces the pool while connections are out).
        self.held: dict[int, tuple[Any, Any]] = {}
        # Driver connections SQLAlchemy detached from their record while still
        # open, with their pool: given back (and discarded) once closed.
        self.orphans: list[tuple[Any, Any]] = []
        # Driver connections SQLAlchemy detached (``detach()``), to take out
        # of their poolkeeper pool (see ``_PoolkeeperPool._take_detached``).
        self.detached: list[tuple[Any, Any]] = []
        # ids of driver connections SQLAlchemy closed (Pool._close_connection):
        # tells a closed connection from a detached one when the driver has
        # no ``closed``/``open`` attribute to ask.
        self.closed: set[int] = set()
        self._ops: Any = None

    def is_closed(self, conn: Any) -> bool:
        """Tell, without I/O, whether a driver connection is closed or broken."""
        if id(conn) in self.closed:
            return True
        if self._ops is None:
            cls = ops_for_connection(conn, is_async=self.is_async)
            if cls is None:
                closed = getattr(conn, "closed", False)
                return bool(closed) if not callable(closed) else False
            # Adapters only use the connect callable to connect, never to check.
            self._ops = cls(lambda: None)
        return bool(self._ops.is_broken(conn))

    def register(self, record: _ConnectionRecord, max_size: int) -> Any:
        conn = record.driver_connection
        with self.lock:
            if len(self.records) >= max_size:
                # Entries of connections poolkeeper has closed since; their ids
                # may be reused, so drop them before adding the new one.
                for key, old in list(self.records.items()):
                    raw = old.driver_connection
                    if raw is None or self.is_closed(raw):
                        del self.records[key]
            self.records[id(conn)] = record
            self.closed.discard(id(conn))  # an id of a connection gone before
        return conn

    def forget(self, conn: Any) -> None:
        """Drop what is known about a connection that left the pool."""
        with self.lock:
            self.records.pop(id(conn), None)
            self.closed.discard(id(conn))

    def record_for(self, conn: Any) -> _ConnectionRecord | None:
        with self.lock:
            return self.records.get(id(conn))

    def hold(self, record: ConnectionPoolEntry, conn: Any, pk: Any) -> None:
        with self.lock:
            self.held[id(record)] = (conn, pk)

    def unhold(self, record: ConnectionPoolEntry) -> tuple[Any, Any] | None:
        """Forget a returned record; return (driver connection, pool) to give it back to, or None."""
        with self.lock:
            held = self.held.pop(id(record), None)
        if held is None:
            return None
        conn, _ = held
        if record.dbapi_connection is None and not self.is_closed(conn):
            # detach(): the caller owns the still-open connection now.
            with self.lock:
                self.records.pop(id(conn), None)
                self.detached.append(held)
            return None
        if (
            record.driver_connection is not None
            and record.driver_connection is not conn
        ):
            # SQLAlchemy reconnected inside the record (recycle or soft
            # invalidation at checkout); poolkeeper cannot adopt that
            # connection, so it is closed and poolkeeper opens its own.
            record.close()
        return held

    def closed_orphans(self) -> list[tuple[Any, Any]]:
        with self.lock:
            done = [h for h in self.orphans if self.is_closed(h[0])]
            self.orphans = [h for h in self.orphans if not self.is_closed(h[0])]
        return done
