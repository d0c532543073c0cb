"""The pool's options, defined once.

:class:`PoolOptions` is the one definition of the keyword arguments that
:class:`~poolkeeper.Pool`, :class:`~poolkeeper.AsyncPool` and the persistent
pools take. From it come:

* the constructors' signatures (``**options: Unpack[PoolOptions]``), so that
  ``mypy --strict`` rejects a misspelt or mistyped option;
* the runtime check of the option names (:func:`split_options`: an unknown
  name is a :class:`TypeError` with a "did you mean" hint) and the
  :class:`~poolkeeper._config.PoolConfig` the core validates;
* README's options table and the API reference: ``tools/gen_options_doc.py``
  writes the table from the docstrings below (first paragraph) and the
  defaults (:func:`option_default`).

Defaults live in :class:`~poolkeeper._config.PoolConfig` for the settings the
core uses, and are None for the rest (hooks, ``name``, ``connect_args``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypedDict

from poolkeeper._config import PoolConfig
from poolkeeper._misuse import reject_unknown_options

__all__ = ["OPTION_NAMES", "PoolOptions", "option_default", "split_options"]


class PoolOptions(TypedDict, total=False):
    """The keyword arguments of the pool constructors (all optional)."""

    min_size: int
    """Connections kept open even when idle (1 by default; equal to
    ``max_size`` for a static pool)."""
    max_size: int
    """Most connections open at once (10 by default)."""
    timeout: float
    """Seconds ``connection()``/``acquire()`` may wait; a per-call ``timeout=``
    overrides it; ``0``: an idle connection or a new one if there is room,
    never queue.

    Past it the caller gets :class:`~poolkeeper.PoolTimeout`."""
    max_waiting: int
    """Callers allowed to queue; beyond it ``TooManyWaiters`` at once (0: no
    limit)."""
    max_lifetime: float | None
    """Retire a connection after this many seconds (shortened by up to 5% at
    random per connection); None: never."""
    max_idle: float | None
    """Close idle connections above ``min_size`` after this many seconds;
    None: keep them."""
    max_uses: int | None
    """Retire a connection after this many checkouts; None: no limit."""
    connect_args: dict[str, Any] | None
    """Keyword arguments for the driver's connect function (URL form only); a
    function value (a coroutine function for ``AsyncPool``) is a credential
    provider, called for each new connection (docs/SECURITY.md)."""
    configure: Callable[[Any], Any] | None
    """Hook called with each new connection before its first use."""
    reset: Callable[[Any], Any] | Literal["full"] | None
    """Hook called with each connection when it returns (after the rollback);
    ``"full"`` instead clears all session state with the driver's own command
    (``DISCARD ALL``, ``COM_RESET_CONNECTION``; docs/DRIVERS.md)."""
    check: Callable[[Any], Any] | None
    """Hook called with a connection before each checkout; if it raises, the
    connection is discarded and another one is tried, invisibly."""
    name: str | None
    """The pool's name in logs, errors and metrics (None: ``pool-N``)."""
    max_connecting: int
    """Connects in flight at once (no connect storms)."""
    reconnect_min: float
    """First retry delay, in seconds, after a failed connect (the backoff is
    exponential, each delay shortened by up to 20% at random)."""
    reconnect_max: float
    """Longest retry delay, in seconds, while the database is unreachable."""
    reconnect_fast_interval: float | None
    """Retry delay, in seconds, after a connect that failed fast (refused,
    "starting up": well under a second) while callers wait, instead of the
    backoff; None: always back off (docs/RELIABILITY.md)."""
    validate: str
    """When to ping a connection before checkout: ``"idle"`` (unused for
    ``validate_after`` s, a sibling just broke, or after a freeze),
    ``"always"``, ``"never"``; ``"auto"`` is ``"idle"`` for drivers with a
    cheap ping, ``"never"`` for a generic DB-API callable. With the server
    drivers the ping gets what is left of the caller's timeout (at least the
    mean connect time, within 0.1-1 s): a server that does not answer costs
    the caller its timeout (``PoolTimeout``), never more, and the connection
    is discarded.

    A failed ping discards the connection and the caller gets another one,
    invisibly."""
    validate_after: float
    """Idle seconds after which ``validate="idle"`` pings."""
    keepalive: float | None
    """Ping idle connections every this many seconds (firewalls, server idle
    timeouts); None: off."""
    leak_timeout: float | None
    """Warn (``ConnectionLeakWarning``, with the acquiring stack) once about a
    connection held longer than this many seconds, and count it in
    ``stats().leaks``; None: off."""
    query_timeout: float | None
    """Abort a checked-out connection whose command has been stuck this many
    seconds (a frozen server that still ACKs TCP): its socket is shut down,
    the caller gets ``QueryTimeout`` inside ``connection()``, the connection
    is discarded; see docs/RELIABILITY.md for the exact rule per driver.

    "Stuck" means: a command is in progress and no data has moved on the
    socket for that long (psycopg, psycopg2, aiopg: libpq's ``ACTIVE``
    status); for drivers that cannot tell whether a command is in progress
    (asyncpg, PyMySQL, mysqlclient, aiomysql) it is the time since checkout,
    shortened by socket traffic. The housekeeper checks every 0.25 s at
    most."""
    fair: bool | Literal["bounded"]
    """FIFO hand-off to waiters: a returned connection goes straight to the
    oldest waiter; ``False`` lets a running caller take it ahead of the
    waiters (much higher throughput under heavy contention, but a waiter can
    time out while others are served); ``"bounded"``: waiters are served in
    FIFO order, but a caller that runs while a returned connection is on its
    way to the oldest waiter may take it, once per waiter: that waiter then
    gets the next one for sure (the connection is not left idle while the
    waiter wakes up; a wait grows by one hand-off at most)."""
    role_check_interval: float | None
    """PostgreSQL URLs: also check every connection's role (primary, standby)
    at its first checkout after every this many seconds, with one query, and
    close those that no longer match ``target_session_attrs``; None: only
    after a sign of failover (a broken connection, a read-only or shutdown
    error), see docs/CLUSTERS.md."""


#: Every option name, in definition order.
OPTION_NAMES: tuple[str, ...] = tuple(PoolOptions.__annotations__)
#: The options the core's :class:`PoolConfig` holds (the rest stay in the shell).
_CONFIG_FIELDS = frozenset(f.name for f in dataclasses.fields(PoolConfig))


def option_default(name: str) -> object:
    """Return the default of option ``name`` (from :class:`PoolConfig`, else None)."""
    for field in dataclasses.fields(PoolConfig):
        if field.name == name:
            return field.default
    return None


def split_options(
    owner: str, options: Mapping[str, Any]
) -> tuple[PoolConfig, dict[str, Any]]:
    """Check ``options`` and split them into the core's settings and the rest.

    Returns the validated :class:`PoolConfig` and the other options (hooks,
    ``name``, ``connect_args``) with their defaults filled in.

    Raises:
        TypeError: An option name is unknown ("did you mean" hint).
        ConfigError: A setting is out of range.
    """
    unknown = [key for key in options if key not in PoolOptions.__annotations__]
    if unknown:
        reject_unknown_options(owner, unknown, OPTION_NAMES)
    config = PoolConfig(**{k: v for k, v in options.items() if k in _CONFIG_FIELDS})
    rest = {
        name: options.get(name) for name in OPTION_NAMES if name not in _CONFIG_FIELDS
    }
    return config, rest
