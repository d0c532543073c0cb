"""Connections lent by ``acquire()``: noticed when closed or dropped without release.

``acquire()`` hands out the driver's own connection (no proxy), so the pool
cannot see what its caller does with it. Three things keep a forgotten one
from holding its slot for good:

* While an ``acquire()`` caller holds a connection, the pool keeps only a
  weak reference to it (``PoolEntry.ref``; ``entry.conn`` is None). A caller
  that drops it lets it be garbage collected; the weak reference's callback
  queues the entry, and the pool takes the slot back at once (in the event
  loop, or in a short-lived thread of its own for the thread pool). Every
  driver's connection supports weak references except the bare
  ``sqlite3.Connection``, which the sqlite3 driver replaces by a subclass;
  for a connection that does not, the pool keeps a strong reference and
  only a closed one is noticed.
* A checkout that finds the pool full, and each housekeeping round, look for
  connections that their ``acquire()`` callers closed, and take those back.
* On the thread pool, ``with pool.acquire() as conn:`` gives the connection
  back on exit. The block's ``with`` runs the driver's own ``__exit__``,
  which for most drivers closes the connection, so each connection the pool
  opens gets, once, a class of its own deriving from its driver's class
  (:func:`aware_class`) whose ``__exit__`` releases a connection held through
  ``acquire()`` and otherwise defers to the driver's.

Each one taken back is reported with a :class:`~poolkeeper.ConnectionLeakWarning`
attributed to the line that acquired it.
"""

from __future__ import annotations

import _thread
import contextlib
import functools
import logging
import warnings
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any

from poolkeeper._core.entry import PoolEntry
from poolkeeper.errors import PoolWarning

if TYPE_CHECKING:
    from types import TracebackType

logger = logging.getLogger(__name__)

#: How many connections closed by their users (and taken back) a pool
#: remembers, so that a late ``release()`` of one is accepted quietly.
REMEMBERED_CLOSED = 64


class HeldConnections:
    """The bookkeeping of one pool for connections lent by ``acquire()``."""

    __slots__ = (
        "__weakref__",
        "_aware",
        "_closed",
        "loop",
        "pending",
        "pool",
        "warn_unaware",
        "weak",
    )

    def __init__(self, pool: Any) -> None:
        self.pool = weakref.ref(pool)
        #: Entries whose connection was garbage collected, not yet taken back.
        #: Appended to by the weak reference callback, which runs inside the
        #: garbage collector (any thread, any moment, perhaps while the pool's
        #: lock is held): a deque append is all it does besides scheduling.
        self.pending: deque[PoolEntry] = deque()
        #: The event loop to schedule the reclaim on (AsyncPool), else None.
        self.loop: Any = None
        #: False once a connection turned out not to support weak references.
        self.weak = True
        #: Whether to say that ``with pool.acquire()`` cannot give back a
        #: connection of a C type (see :meth:`adopt`); off for the wrappers
        #: (psycopg2's compat pools, Django) whose users never write it.
        self.warn_unaware = True
        self._closed: dict[int, Any] = {}
        self._aware: dict[type, type | None] = {}

    # -- checkout and return -----------------------------------------------

    def watch(self, entry: PoolEntry) -> None:
        """Hold the connection of ``entry`` weakly, on its first ``acquire()``.

        Makes its weak reference (kept for the connection's life in the pool)
        and drops the pool's strong reference; a connection that does not
        support weak references stays held strongly, as all later ones will.
        """
        try:
            entry.ref = weakref.ref(
                entry.conn, functools.partial(_dropped, weakref.ref(self), entry)
            )
        except TypeError:
            self.weak = False
            return
        entry.conn = None

    @staticmethod
    def give_back(entry: PoolEntry, conn: Any) -> None:
        """Hold ``conn``, lent by ``acquire()``, strongly again."""
        if entry.conn is None and entry.ref is not None and entry.ref() is conn:
            entry.conn = conn

    @staticmethod
    def holds(entry: PoolEntry | None, conn: Any) -> bool:
        """Whether ``entry`` is lent to an ``acquire()`` caller as ``conn``."""
        return (
            entry is not None and entry.site is not None and entry.live_conn() is conn
        )

    # -- connections taken back ----------------------------------------------

    def remember_closed(self, conn: Any) -> None:
        """Remember a connection taken back because its user closed it."""
        closed = self._closed
        if len(closed) >= REMEMBERED_CLOSED:
            del closed[next(iter(closed))]
        closed[id(conn)] = conn

    def forget_closed(self, conn: Any) -> bool:
        """Whether ``conn`` was taken back as closed (and forget it)."""
        if self._closed.get(id(conn)) is conn:
            del self._closed[id(conn)]
            return True
        return False

    # -- with pool.acquire() on threads --------------------------------------

    def adopt(self, conn: Any) -> None:
        """Give a new connection its pool-aware class (see :func:`aware_class`)."""
        base = type(conn)
        try:
            cls = self._aware[base]
        except KeyError:
            cls = self._aware[base] = aware_class(base, self)
        if cls is not None:
            try:
                conn.__class__ = cls
            except TypeError:  # a C type: the connection keeps its class
                self._aware[base] = None
                if self.warn_unaware:
                    self._warn_not_aware(base)

    def _warn_not_aware(self, base: type) -> None:
        """Say (once per pool and class) that ``with pool.acquire()`` would leak.

        Runs at the first connect, often in a pool thread: a filter that makes
        the warning an error must not fail the connect, so it is logged then.
        """
        pool = self.pool()
        name = pool.name if pool is not None else "?"
        message = (
            f"pool {name!r}: connections of {base.__module__}.{base.__qualname__} "
            "(a C type) cannot be made to come back to the pool at the end of "
            "'with pool.acquire() as conn:': the driver's own with block runs "
            "instead and the slot stays taken until release(). Use 'with "
            "pool.connection() as conn:', or make your connect callable create "
            "a subclass (psycopg2: connection_factory=, sqlite3: factory=), or "
            "pass a URL"
        )
        try:
            warnings.warn(PoolWarning(message), stacklevel=2)
        except Warning:
            logger.warning("%s", message)


def is_closed(driver: Any, conn: Any) -> bool:
    """Whether ``conn`` was closed, told without I/O.

    The adapter's ``is_closed`` where it has one (mysqlclient's ``is_broken``
    also polls the socket, which finds a result still being read by the
    connection's holder), else its ``is_broken``. A connect callable's
    adapter is found after the first connect (``_ops``).
    """
    adapter = getattr(driver, "_ops", None) or driver
    check = getattr(adapter, "is_closed", None) or adapter.is_broken
    return bool(check(conn))


def _dropped(held_ref: weakref.ref[HeldConnections], entry: PoolEntry, _: Any) -> None:
    """Weak reference callback: a lent connection was garbage collected."""
    held = held_ref()
    if held is None:
        return
    held.pending.append(entry)
    loop = held.loop
    # RuntimeError: the loop is closed (the pool is gone with it), or the
    # interpreter is shutting down.
    with contextlib.suppress(RuntimeError):
        if loop is not None:
            loop.call_soon_threadsafe(_reclaim_soon, held_ref)
        else:
            # Threads: the slot is taken back in a thread of its own, at once
            # (a caller may be waiting). A bare _thread, not threading.Thread:
            # starting one takes threading's own locks, which the thread this
            # callback interrupted might hold.
            _thread.start_new_thread(_reclaim_soon, (held_ref,))


def _reclaim_soon(held_ref: weakref.ref[HeldConnections]) -> None:
    held = held_ref()
    pool = held.pool() if held is not None else None
    if pool is not None:
        pool._take_unreleased()


class _Released(Exception):
    """Passed to a driver's ``__exit__`` to make it roll back (psycopg2)."""


def aware_class(base: type, held: HeldConnections) -> type | None:
    """Derive from a driver's connection class a class whose ``with`` block
    gives a connection held through ``acquire()`` back to its pool.

    Returns None for a class without ``__exit__``. The new class keeps the
    base's name, module and layout; only ``__exit__`` differs, and only for
    a connection lent by ``acquire()``, which goes back with ``release()``'s
    rule (an open transaction is rolled back, with a warning).
    """
    base_exit = getattr(base, "__exit__", None)
    if base_exit is None:
        return None
    # psycopg2's __exit__ also clears the flag that forbids entering `with`
    # twice: it must run (made to roll back) before the connection goes back.
    run_base_exit = base.__module__.startswith("psycopg2")
    pool_of = held.pool

    def __exit__(
        self: Any,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Any:
        pool = pool_of()
        if pool is None or not held.holds(pool._state.in_use.get(id(self)), self):
            return base_exit(self, exc_type, exc, tb)
        if run_base_exit:
            if exc_type is None:
                pool._warn_if_open(self)
            base_exit(self, _Released, _Released(), None)
        pool.release(self)
        return None

    namespace = {
        "__slots__": (),
        "__exit__": __exit__,
        "__module__": base.__module__,
        "__qualname__": base.__qualname__,
        "__doc__": base.__doc__,
    }
    return type(base.__name__, (base,), namespace)
