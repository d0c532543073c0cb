"""Driver settings that make a pool safe behind PgBouncer in transaction mode.

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

:func:`transaction_mode_options` returns the pool constructor arguments for a
driver: no server-side prepared statements (psycopg ``prepare_threshold=None``,
asyncpg ``statement_cache_size=0``), and no session reset.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Any

from poolkeeper._config import redact
from poolkeeper.errors import ConfigError

__all__ = ["DRIVER_CONNECT_ARGS", "driver_name", "transaction_mode_options"]

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


def transaction_mode_options(
    driver: str = "psycopg",
    *,
    prepared_statements: bool = False,
    connect_args: Mapping[str, Any] | None = None,
    **pool_kwargs: Any,
) -> dict[str, Any]:
    """Return pool constructor arguments for PgBouncer in transaction mode.

    Args:
        driver: The driver name, or the pool's URL (see :func:`driver_name`).
        prepared_statements: True only for PgBouncer >= 1.21 with
            ``max_prepared_statements`` > 0, which tracks protocol-level
            prepared statements; then the driver's own statement caching is
            kept. Default False.
        connect_args: Extra driver arguments; the preset's are added unless
            these set the same keys.
        **pool_kwargs: Any other pool arguments (``min_size``, ``timeout``,
            ...), passed through unchanged.

    Returns:
        Keyword arguments for :class:`poolkeeper.Pool` /
        :class:`poolkeeper.AsyncPool` (``connect_args``, ``reset``, and
        ``pool_kwargs``).

    Raises:
        ConfigError: Not a PostgreSQL driver, or a ``reset`` hook was given
            (a session reset cannot work in transaction mode).
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
