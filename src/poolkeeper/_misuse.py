"""Clear errors for the mistakes a new user makes first.

A misspelt option (``max_szie=5``) or another pool library's name for one
(SQLAlchemy's ``pool_size=``) gets a :class:`TypeError` naming the option to
use instead; ``with`` on an :class:`~poolkeeper.AsyncPool` (or on its
``connection()``) says to write ``async with``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import NoReturn

#: Other pools' option names -> what poolkeeper calls them (SQLAlchemy,
#: psycopg_pool, asyncpg, aiopg, HikariCP-style names).
FOREIGN_OPTIONS: dict[str, str] = {
    "pool_size": "min_size and max_size (SQLAlchemy's pool_size=5, "
    "max_overflow=10 is min_size=5, max_size=15)",
    "max_overflow": "max_size (= SQLAlchemy's pool_size + max_overflow)",
    "pool_timeout": "timeout",
    "pool_recycle": "max_lifetime",
    "pool_pre_ping": 'validate ("always" pings every checkout; the default '
    '"auto" pings connections idle for validate_after seconds)',
    "pool_reset_on_return": "reset",
    "pool_use_lifo": "nothing (poolkeeper always hands out the most recently "
    "returned connection)",
    "recycle": "max_lifetime",
    "minsize": "min_size",
    "maxsize": "max_size",
    "max_inactive_connection_lifetime": "max_idle",
    "max_queries": "max_uses",
    "init": "configure",
    "setup": "check",
    "conninfo": "connect (the first positional argument: a URL or a callable)",
    "dsn": "connect (the first positional argument: a URL or a callable)",
    "url": "connect (the first positional argument: a URL or a callable)",
    "kwargs": "connect_args",
    "connection_class": "connect (a callable returning your connection)",
    "max_waiting_time": "timeout",
    "reconnect_timeout": "reconnect_max",
    "open": "nothing: the pool opens on first use, in its with block, or with open()",
    "maximum_pool_size": "max_size",
    "minimum_idle": "min_size",
    "connection_timeout": "timeout",
    "idle_timeout": "max_idle",
    "leak_detection_threshold": "leak_timeout",
    "statement_timeout": "query_timeout",
}


def reject_unknown_options(
    owner: str, unknown: Iterable[str], known: Iterable[str]
) -> None:
    """Raise a :class:`TypeError` naming each unknown option and its right name.

    Args:
        owner: The class name for the message (``Pool``, ``AsyncPool``).
        unknown: The keyword arguments the constructor does not take.
        known: The options it does take.

    Raises:
        TypeError: ``unknown`` is not empty.
    """
    names = sorted(unknown)
    if not names:
        return
    known = sorted(known)
    hints = []
    for name in names:
        if name in FOREIGN_OPTIONS:
            hints.append(f"{name!r}: use {FOREIGN_OPTIONS[name]}")
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hints.append(
            f"{name!r}: did you mean {close[0]!r}?"
            if close
            else f"{name!r}: not an option"
        )
    raise TypeError(
        f"{owner}() got unexpected keyword argument"
        f"{'s' if len(names) > 1 else ''}: {'; '.join(hints)} "
        f"(its options: {', '.join(known)})"
    )


def needs_async_with(what: str, example: str) -> NoReturn:
    """Raise the :class:`TypeError` for ``with`` used where ``async with`` belongs.

    Args:
        what: The object used with ``with`` (``AsyncPool``).
        example: The statement to write instead, without ``async with``.
    """
    raise TypeError(
        f"{what} is asynchronous: write 'async with {example}', not "
        f"'with {example}' (poolkeeper.Pool is the pool for threads)"
    )
