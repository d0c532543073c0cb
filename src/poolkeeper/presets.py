"""Ready-made pool settings for common deployments.

Each function returns a dict of constructor keyword arguments, so a preset is
visible and easy to adjust::

    pool = poolkeeper.Pool(url, **presets.pgbouncer_transaction(url, max_size=20))

Presets only build arguments; they change nothing behind the pool's back.
Importing this module imports no driver.

PgBouncer in transaction mode (:func:`pgbouncer_transaction`)
-------------------------------------------------------------

In ``pool_mode = transaction`` PgBouncer gives a client a server connection
for one transaction only; the next transaction (or, outside a transaction,
the next statement) may run on another server connection. Anything a driver
keeps in the server *session* is then lost or, worse, found on the wrong
client:

- Named prepared statements. psycopg 3 prepares a query after it ran
  ``prepare_threshold`` (5) times; asyncpg prepares every query into its
  statement cache. On another server connection the statement is missing
  (``prepared statement "_pg3_0" does not exist``) or already taken
  (``prepared statement "__asyncpg_stmt_1__" already exists``). PgBouncer
  1.21 and later can track protocol-level prepared statements when
  ``max_prepared_statements`` is set; older versions (Debian/Ubuntu ship
  1.18 and earlier in some releases) cannot.
- Session state: ``SET`` without ``LOCAL``, ``LISTEN``, advisory locks,
  temporary tables, ``DISCARD ALL`` as a reset. Keep settings in
  ``SET LOCAL`` inside a transaction (or in the PgBouncer/role config), and
  do not use poolkeeper's ``reset`` hook for a session reset: it would run on
  whatever server connection PgBouncer picks.

:func:`pgbouncer_transaction` returns the pool constructor arguments for a
driver: no server-side prepared statements (psycopg ``prepare_threshold=None``,
asyncpg ``statement_cache_size=0``), and no session reset.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Any

from poolkeeper._config import redact
from poolkeeper.errors import ConfigError

__all__ = [
    "DRIVER_CONNECT_ARGS",
    "driver_name",
    "null_pool",
    "pgbouncer_transaction",
    "serverless",
]

#: Per driver: the ``connect_args`` that turn off named server-side prepared
#: statements. psycopg2 and aiopg never prepare on their own, so they need none.
DRIVER_CONNECT_ARGS: Mapping[str, Mapping[str, Any]] = {
    "psycopg": {"prepare_threshold": None},
    "asyncpg": {"statement_cache_size": 0},
    "psycopg2": {},
    "aiopg": {},
}

_SCHEME_DRIVERS = {
    "postgresql+psycopg": "psycopg",
    "postgresql+psycopg3": "psycopg",
    "postgresql+asyncpg": "asyncpg",
    "postgresql+psycopg2": "psycopg2",
    "postgresql+aiopg": "aiopg",
}


def driver_name(driver_or_url: str) -> str:
    """Return the PostgreSQL driver a name or URL refers to.

    Args:
        driver_or_url: ``"psycopg"``, ``"asyncpg"``, ``"psycopg2"``,
            ``"aiopg"``, or a URL whose scheme names one of them. A bare
            ``postgresql://`` means psycopg 3 when it is installed, else
            psycopg2, as for the pool itself.

    Raises:
        ConfigError: Not a PostgreSQL driver poolkeeper supports.
    """
    name = driver_or_url
    if "://" in driver_or_url:
        scheme = driver_or_url.partition("://")[0].lower()
        if scheme in ("postgresql", "postgres"):
            found = importlib.util.find_spec("psycopg") is not None
            return "psycopg" if found else "psycopg2"
        name = _SCHEME_DRIVERS.get(scheme, scheme)
    if name not in DRIVER_CONNECT_ARGS:
        raise ConfigError(
            f"PgBouncer presets apply to PostgreSQL drivers "
            f"({', '.join(sorted(DRIVER_CONNECT_ARGS))}), got {redact(driver_or_url)!r}"
        )
    return name


#: A serverless function's idle connection is closed after this many seconds
#: (while the environment is running): server and proxy idle timeouts are
#: often a few minutes.
SERVERLESS_MAX_IDLE = 300.0
#: Retire connections after 15 minutes, within typical proxy/server limits.
SERVERLESS_MAX_LIFETIME = 900.0
#: Fail a checkout after 10 s: a function's own time limit is usually short.
SERVERLESS_TIMEOUT = 10.0


def pgbouncer_transaction(
    driver: str = "psycopg",
    *,
    prepared_statements: bool = False,
    connect_args: Mapping[str, Any] | None = None,
    **pool_kwargs: Any,
) -> dict[str, Any]:
    """Return pool arguments for a pool in front of PgBouncer in transaction mode.

    Turns off the driver's named server-side prepared statements (psycopg
    ``prepare_threshold=None``, asyncpg ``statement_cache_size=0``) and any
    session reset. See the module docstring for why.

    Args:
        driver: ``"psycopg"`` (default), ``"asyncpg"``, ``"psycopg2"``,
            ``"aiopg"``, or the pool's URL.
        prepared_statements: True for PgBouncer >= 1.21 with
            ``max_prepared_statements`` set: keep the driver's caching.
        connect_args: Extra driver arguments (win over the preset's).
        **pool_kwargs: Other pool arguments, passed through.

    Returns:
        Keyword arguments for :class:`poolkeeper.Pool` or
        :class:`poolkeeper.AsyncPool`.

    Raises:
        ConfigError: Not a PostgreSQL driver, or a ``reset`` hook was given.
    """
    name = driver_name(driver)
    if pool_kwargs.get("reset") is not None:
        raise ConfigError(
            "a reset hook runs on whatever server connection PgBouncer picks in "
            "transaction mode; leave reset=None and keep no session state"
        )
    args: dict[str, Any] = (
        {} if prepared_statements else dict(DRIVER_CONNECT_ARGS[name])
    )
    args.update(connect_args or {})
    options: dict[str, Any] = {**pool_kwargs, "reset": None}
    if args:
        options["connect_args"] = args
    return options


def null_pool(**pool_kwargs: Any) -> dict[str, Any]:
    """Return pool arguments for a pool that keeps no connection between uses.

    Each checkout opens a new connection, which is closed when it is given
    back (``min_size=0``, ``max_uses=1``); ``max_size`` still bounds how many
    are open at once. Useful behind a pooling proxy (RDS Proxy, PgBouncer) that
    does the pooling itself, and in tests.

    Args:
        **pool_kwargs: Other pool arguments (they win over the preset's).

    Returns:
        Keyword arguments for :class:`poolkeeper.Pool` or
        :class:`poolkeeper.AsyncPool`.
    """
    return {"min_size": 0, "max_uses": 1, **pool_kwargs}


def serverless(*, null: bool = False, **pool_kwargs: Any) -> dict[str, Any]:
    """Return pool arguments for a function-as-a-service environment (AWS Lambda).

    One execution environment serves one invocation at a time, so the pool is
    tiny: no connection opened before it is needed (``min_size=0``), one at
    most (``max_size=1``), a short checkout timeout, and idle/lifetime limits
    below typical server and proxy timeouts. With ``null=True`` the pool
    keeps nothing between invocations (see :func:`null_pool`), for use
    behind RDS Proxy or PgBouncer.

    Args:
        null: Open a fresh connection per checkout instead of reusing one.
        **pool_kwargs: Other pool arguments (they win over the preset's).

    Returns:
        Keyword arguments for :class:`poolkeeper.Pool` or
        :class:`poolkeeper.AsyncPool`.
    """
    options: dict[str, Any] = {
        "min_size": 0,
        "max_size": 1,
        "timeout": SERVERLESS_TIMEOUT,
        "max_idle": SERVERLESS_MAX_IDLE,
        "max_lifetime": SERVERLESS_MAX_LIFETIME,
    }
    if null:
        options.update(null_pool())
    options.update(pool_kwargs)
    return options
