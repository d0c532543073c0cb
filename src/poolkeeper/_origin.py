"""Where an exception came from: the database driver (or the OS), or the application.

The query watchdog (``query_timeout``) aborts a connection by shutting its
socket down; the block that was using it then fails, and the pool turns that
failure into :class:`~poolkeeper.QueryTimeout` only when the abort caused it:
when the error is the driver's (or the OS's, a cut socket), directly, as the
``__cause__`` of an application error that wraps it, or inside an exception
group (an ``asyncio.TaskGroup`` in the block). The application's own errors,
poolkeeper's own and a bare :class:`TimeoutError` (an ``asyncio.timeout()``
of the application) pass unchanged.
"""

from __future__ import annotations

from typing import Any

from poolkeeper.errors import PoolError

#: Top-level packages whose exceptions count as the driver's.
DRIVER_PACKAGES = frozenset(
    {
        "psycopg",
        "psycopg_binary",
        "psycopg_c",
        "psycopg2",
        "asyncpg",
        "aiopg",
        "pymysql",
        "MySQLdb",
        "aiomysql",
        "sqlite3",
        "aiosqlite",
    }
)

#: Packages that are never a driver's (a connection class's generic bases).
_NOT_DRIVERS = frozenset({"builtins", "__main__", "typing", "abc", "collections"})


def from_driver(exc: BaseException, conn: Any) -> bool:
    """Tell whether ``exc`` came from the driver (or the OS), not from the application.

    The driver's exceptions live in its package: a known driver's, or that of
    the connection's class (a generic DB-API driver). When the application
    subclasses the driver's connection class, the subclass's package is the
    application's, not the driver's. ``__cause__`` chains and the members of
    exception groups are followed.
    """
    packages = _connection_packages(type(conn))
    seen: set[int] = set()
    todo = [exc]
    while todo:
        error = todo.pop()
        if id(error) in seen:
            continue
        seen.add(id(error))
        if _raised_by_driver(error, packages):
            return True
        # An exception group (builtin from 3.11, or the backport on 3.10).
        members = getattr(error, "exceptions", None)
        if isinstance(members, tuple):
            todo.extend(m for m in members if isinstance(m, BaseException))
        if error.__cause__ is not None:
            todo.append(error.__cause__)
    return False


def _raised_by_driver(exc: BaseException, packages: frozenset[str]) -> bool:
    if not isinstance(exc, Exception) or isinstance(exc, PoolError):
        return False  # poolkeeper's own errors (PoolTimeout...) are the app's
    package = _package(type(exc))
    if package in DRIVER_PACKAGES or package in packages:
        return True
    # A cut socket raises ConnectionError, BrokenPipeError...; a bare
    # TimeoutError is an application's own asyncio.timeout().
    return isinstance(exc, OSError) and not isinstance(exc, TimeoutError)


def _connection_packages(cls: type) -> frozenset[str]:
    """The packages of a connection class and its bases, less the application's.

    A class whose bases all live in its own package is the driver's own; a
    class deriving from another package's class (``class MyConn(
    psycopg.Connection)`` in ``myapp.db``) is the application's subclass, and
    its own package is left out.
    """
    packages = [_package(c) for c in cls.__mro__]
    found = {p for p in packages if p not in _NOT_DRIVERS}
    if len(found) > 1:
        found.discard(packages[0])
    return frozenset(found)


def _package(cls: type) -> str:
    return cls.__module__.partition(".")[0]
