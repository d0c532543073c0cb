"""Driver adapters and the URL scheme registry.

A URL's scheme (``dialect+driver``) picks an adapter module in this package.
Adapter modules are imported lazily, so importing :mod:`poolkeeper` imports no
database library. Adding a driver means adding one module here and one entry
to :data:`SCHEMES` (and, for pools built from a callable, to
:data:`CONNECTION_MODULES`).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from poolkeeper._config import URL, parse_url
from poolkeeper.drivers.base import AsyncDriver, Driver, TxStatus

if TYPE_CHECKING:
    from poolkeeper._credentials import Secrets

__all__ = [
    "CONNECTION_MODULES",
    "SCHEMES",
    "AsyncDriver",
    "Driver",
    "DriverSpec",
    "TxStatus",
    "driver_for_url",
    "spec_for_url",
]


@dataclass(frozen=True)
class DriverSpec:
    """Where to find the adapter for one ``dialect+driver`` scheme."""

    module: str
    """Adapter module under ``poolkeeper.drivers``."""
    package: str
    """Import name of the database library the adapter needs."""
    install: str
    """What to ``pip install`` when that library is missing."""
    sync_class: str | None
    """Adapter class for :class:`poolkeeper.Pool`, or None if async-only."""
    async_class: str | None
    """Adapter class for :class:`poolkeeper.AsyncPool`, or None if sync-only."""


_PSYCOPG = DriverSpec(
    "psycopg", "psycopg", "psycopg[binary]", "PsycopgDriver", "AsyncPsycopgDriver"
)
_ASYNCPG = DriverSpec("asyncpg", "asyncpg", "asyncpg", None, "AsyncpgDriver")
_SQLITE3 = DriverSpec(
    "sqlite3", "sqlite3", "(the Python sqlite3 module)", "Sqlite3Driver", None
)
_AIOSQLITE = DriverSpec("aiosqlite", "aiosqlite", "aiosqlite", None, "AiosqliteDriver")
_PSYCOPG2 = DriverSpec(
    "psycopg2", "psycopg2", "psycopg2-binary", "Psycopg2Driver", None
)
_AIOPG = DriverSpec("aiopg", "aiopg", "aiopg", None, "AiopgDriver")
_PYMYSQL = DriverSpec("pymysql", "pymysql", "PyMySQL", "PymysqlDriver", None)
_AIOMYSQL = DriverSpec("aiomysql", "aiomysql", "aiomysql", None, "AiomysqlDriver")
_MYSQLDB = DriverSpec("mysqldb", "MySQLdb", "mysqlclient", "MysqldbDriver", None)

#: Every supported URL scheme and its adapter. ``postgresql`` alone resolves
#: to psycopg 3, or to psycopg2 when only that is installed (see
#: :func:`driver_for_url`).
SCHEMES: dict[str, DriverSpec] = {
    "postgresql+psycopg": _PSYCOPG,
    "postgresql+asyncpg": _ASYNCPG,
    "postgresql+psycopg2": _PSYCOPG2,
    "postgresql+aiopg": _AIOPG,
    "mysql+pymysql": _PYMYSQL,
    "mysql+aiomysql": _AIOMYSQL,
    "mysql+mysqldb": _MYSQLDB,
    "sqlite": _SQLITE3,
    "sqlite+pysqlite": _SQLITE3,
    "sqlite+sqlite3": _SQLITE3,
    "sqlite+aiosqlite": _AIOSQLITE,
}

#: Aliases: schemes that mean the same as another one.
_ALIASES = {
    "postgres": "postgresql",
    "postgresql+psycopg3": "postgresql+psycopg",
    "mariadb": "mysql",
    "mariadb+pymysql": "mysql+pymysql",
    "mariadb+aiomysql": "mysql+aiomysql",
    "mariadb+mysqldb": "mysql+mysqldb",
    "mysql+mysqlclient": "mysql+mysqldb",
}

#: Default driver per bare dialect, in order of preference.
_DEFAULTS: dict[str, tuple[str, ...]] = {
    "postgresql": ("postgresql+psycopg", "postgresql+psycopg2"),
    "mysql": ("mysql+pymysql",),
}

#: Top-level module of a connection's class -> scheme whose adapter handles it.
#: Used when a pool is built from a callable, to learn how to treat the
#: connections the callable returns.
CONNECTION_MODULES: dict[str, str] = {
    "psycopg": "postgresql+psycopg",
    "asyncpg": "postgresql+asyncpg",
    "sqlite3": "sqlite",
    "aiosqlite": "sqlite+aiosqlite",
    "psycopg2": "postgresql+psycopg2",
    "aiopg": "postgresql+aiopg",
    "pymysql": "mysql+pymysql",
    "aiomysql": "mysql+aiomysql",
    "MySQLdb": "mysql+mysqldb",
}


def supported_schemes() -> list[str]:
    """Return every URL scheme poolkeeper knows, sorted."""
    return sorted({*SCHEMES, *_DEFAULTS, *_ALIASES})


def _load(spec: DriverSpec, class_name: str, scheme: str) -> Any:
    if importlib.util.find_spec(spec.package) is None:
        from poolkeeper.errors import ConfigError

        raise ConfigError(
            f"the {scheme}:// scheme needs the {spec.package!r} package: "
            f"pip install '{spec.install}' (or poolkeeper[{spec.module}])"
        )
    module = importlib.import_module(f"poolkeeper.drivers.{spec.module}")
    return getattr(module, class_name)


def _resolve_scheme(url: URL) -> tuple[str, DriverSpec]:
    from poolkeeper.errors import ConfigError

    scheme = _ALIASES.get(url.scheme, url.scheme)
    if scheme in _DEFAULTS:
        candidates = [c for c in _DEFAULTS[scheme] if c in SCHEMES]
        for candidate in candidates:
            if importlib.util.find_spec(SCHEMES[candidate].package) is not None:
                return candidate, SCHEMES[candidate]
        if candidates:
            return candidates[0], SCHEMES[candidates[0]]
    if scheme not in SCHEMES:
        raise ConfigError(
            f"unsupported URL scheme {url.scheme!r}; supported schemes: "
            + ", ".join(supported_schemes())
        )
    return scheme, SCHEMES[scheme]


def spec_for_url(url: str) -> tuple[str, DriverSpec]:
    """Return the scheme a URL resolves to and its :class:`DriverSpec`.

    Nothing is imported: this tells whether the URL's driver is sync, async or
    both, and which package it needs, even when that package is missing.

    Raises:
        ConfigError: the URL is malformed or its scheme unknown.
    """
    return _resolve_scheme(parse_url(url))


def driver_for_url(
    url: str,
    connect_args: Mapping[str, Any],
    *,
    is_async: bool,
    secrets: Secrets | None = None,
) -> Driver | AsyncDriver:
    """Build the adapter a URL names, for a sync or an async pool.

    Callables among the ``connect_args`` values are credential providers,
    called for each new connection (see :mod:`poolkeeper._credentials`); the
    values they return for secrets are added to ``secrets``.

    Raises:
        ConfigError: the scheme is unknown, its library is not installed,
            the driver does not fit the pool kind (sync vs asyncio), or a
            coroutine function provider was given to a sync pool.
    """
    from poolkeeper._credentials import Secrets, wrap_providers
    from poolkeeper.errors import ConfigError

    parsed = parse_url(url)
    scheme, spec = _resolve_scheme(parsed)
    class_name = spec.async_class if is_async else spec.sync_class
    if class_name is None:
        kind, other = ("AsyncPool", "Pool") if is_async else ("Pool", "AsyncPool")
        raise ConfigError(
            f"the {scheme}:// driver is {'sync' if is_async else 'async'}-only and "
            f"cannot be used with {kind}; use {other}, or pick another driver: "
            + ", ".join(_schemes_for(is_async=is_async))
        )
    cls = _load(spec, class_name, scheme)
    args = wrap_providers(
        connect_args, secrets if secrets is not None else Secrets(), is_async=is_async
    )
    return cls.from_url(parsed, args)  # type: ignore[no-any-return]


def _schemes_for(*, is_async: bool) -> list[str]:
    return sorted(
        s
        for s, spec in SCHEMES.items()
        if (spec.async_class if is_async else spec.sync_class)
    )


def ops_for_connection(conn: object, *, is_async: bool) -> Any:
    """Return the adapter class that knows how to handle ``conn``, or None.

    Found from the module of the connection's class, or of the nearest base
    class from a known driver: a subclass of a driver's connection class
    (asyncpg's ``connection_class=``, psycopg2's ``connection_factory=``)
    is that driver's connection.
    """
    for cls in type(conn).__mro__:
        scheme = CONNECTION_MODULES.get(cls.__module__.partition(".")[0])
        if scheme is not None:
            break
    else:
        return None
    spec = SCHEMES[scheme]
    class_name = spec.async_class if is_async else spec.sync_class
    if class_name is None:
        return None
    return _load(spec, class_name, scheme)
