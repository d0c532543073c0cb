"""Real driver connections disguised as an unknown DB-API 2.0 library.

A pool built from a callable picks its adapter from the module of the first
connection's class (``poolkeeper.drivers.CONNECTION_MODULES``). Wrapping a
real connection in :class:`GenericConnection`, a class from this test
package, makes poolkeeper fall back to the generic DB-API adapter
(:mod:`poolkeeper.drivers.dbapi`) while the statements still reach a real
server, so the generic rules are tested against PostgreSQL and MariaDB like
every named driver.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from poolkeeper._config import parse_url

__all__ = ["GenericConnection", "bare_connect", "generic_connect"]


class GenericConnection:
    """Forward every attribute to a real driver connection of another library."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def _mysql_kwargs(url: str) -> dict[str, Any]:
    parsed = parse_url(url)
    return {
        "host": parsed.host or "127.0.0.1",
        "port": parsed.port or 3306,
        "user": parsed.username or "root",
        "password": parsed.password or "",
        "database": parsed.database,
    }


def generic_connect(
    library: str, url: str
) -> Callable[[], GenericConnection] | Callable[[], Awaitable[GenericConnection]]:
    """Return a connect callable for ``library`` whose connections look generic.

    Args:
        library: ``psycopg2`` or ``pymysql`` (sync), ``aiomysql`` (asyncio).
        url: The server URL; only its host, port, credentials and database
            are used, so any ``dialect+driver`` scheme works.
    """
    if library == "psycopg2":
        import psycopg2

        dsn = "postgresql://" + url.partition("://")[2]
        return lambda: GenericConnection(psycopg2.connect(dsn))
    if library == "pymysql":
        import pymysql

        kwargs = _mysql_kwargs(url)
        return lambda: GenericConnection(pymysql.connect(**kwargs))
    if library == "aiomysql":
        import aiomysql

        kwargs = _mysql_kwargs(url)
        kwargs["db"] = kwargs.pop("database")

        async def connect() -> GenericConnection:
            return GenericConnection(await aiomysql.connect(**kwargs))

        return connect
    raise ValueError(f"no generic wrapper for {library!r}")


def bare_connect(library: str, url: str) -> Callable[[], Any]:
    """Return a connect callable for ``library`` giving the driver's own connection.

    Args:
        library: ``psycopg2`` or ``pymysql``.
        url: The server URL, as for :func:`generic_connect`.
    """
    if library == "psycopg2":
        import psycopg2

        dsn = "postgresql://" + url.partition("://")[2]
        return lambda: psycopg2.connect(dsn)
    if library == "pymysql":
        import pymysql

        kwargs = _mysql_kwargs(url)
        return lambda: pymysql.connect(**kwargs)
    raise ValueError(f"no bare connect for {library!r}")
