"""Ready-made pool settings for common deployments.

Each function returns a dict of constructor keyword arguments, so a preset is
visible and easy to adjust::

    pool = poolkeeper.Pool(url, **presets.pgbouncer_transaction(url, max_size=20))

Presets only build arguments; they change nothing behind the pool's back.
Importing this module imports no driver.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from poolkeeper.integrations.pgbouncer import transaction_mode_options

__all__ = ["null_pool", "pgbouncer_transaction", "serverless"]

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
    session reset. See :mod:`poolkeeper.integrations.pgbouncer` for why.

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
    return transaction_mode_options(
        driver,
        prepared_statements=prepared_statements,
        connect_args=connect_args,
        **pool_kwargs,
    )


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
