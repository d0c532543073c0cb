"""sqlite3 adapter (sync only): :class:`Sqlite3Driver` for ``sqlite:///path``.

Connections are opened with ``check_same_thread=False`` because a pooled
connection is used by whichever thread checks it out (one at a time).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable
from typing import Any

from poolkeeper._config import URL
from poolkeeper.drivers._connect_errors import classify_sqlite
from poolkeeper.drivers.base import TxStatus

# Module constants: an Enum member read off its class costs a metaclass hook.
_IDLE, _INTRANS = TxStatus.IDLE, TxStatus.INTRANS


def url_to_kwargs(url: URL, connect_args: dict[str, Any]) -> dict[str, Any]:
    """Turn a parsed ``sqlite:///path`` URL into ``sqlite3.connect`` arguments."""
    kwargs: dict[str, Any] = {
        "database": url.database or ":memory:",
        "check_same_thread": False,
    }
    for key, value in url.query.items():
        if key == "timeout":
            kwargs[key] = float(value)
        elif key == "uri":
            kwargs[key] = value.lower() in ("1", "true", "yes", "on")
        else:
            kwargs[key] = value
    kwargs.update(connect_args)
    return kwargs


class Connection(sqlite3.Connection):
    """``sqlite3.Connection`` as a Python class, the pool's default ``factory``.

    Unlike its C base it supports weak references (so the pool notices one
    dropped without release) and can take the pool-aware class that makes
    ``with pool.acquire() as conn:`` give it back (see ``poolkeeper._held``).
    It keeps its base's module and name.
    """

    __module__ = sqlite3.Connection.__module__


class Sqlite3Driver:
    """Sync sqlite3 adapter."""

    name = "sqlite3"
    is_async = False
    classify_connect_error = staticmethod(classify_sqlite)

    def __init__(self, connect: Callable[[], Any]) -> None:
        self._connect = connect

    @classmethod
    def from_url(cls, url: URL, connect_args: dict[str, Any]) -> Sqlite3Driver:
        """Build the adapter for a parsed URL."""
        kwargs = url_to_kwargs(url, connect_args)
        kwargs.setdefault("factory", Connection)
        return cls(lambda: sqlite3.connect(**kwargs))

    def connect(self) -> Any:
        return self._connect()

    def transaction_status(self, conn: Any) -> TxStatus:
        return _INTRANS if conn.in_transaction else _IDLE

    @staticmethod
    def is_idle(conn: Any) -> bool:
        # Open (a closed connection raises) and outside a transaction: one
        # attribute read on every return.
        try:
            return not conn.in_transaction
        except sqlite3.ProgrammingError:
            return False

    def is_broken(self, conn: Any) -> bool:
        try:
            conn.in_transaction  # noqa: B018 - raises ProgrammingError once closed
        except sqlite3.ProgrammingError:
            return True
        return False

    def commit(self, conn: Any) -> None:
        conn.commit()

    def rollback(self, conn: Any) -> None:
        conn.rollback()

    def ping(self, conn: Any) -> None:
        conn.execute("SELECT 1").close()

    def close(self, conn: Any) -> None:
        with contextlib.suppress(Exception):
            conn.close()
