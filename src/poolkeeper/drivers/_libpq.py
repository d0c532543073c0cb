"""URL -> libpq keyword arguments, shared by the libpq-based adapters.

psycopg (3), psycopg2 and aiopg all hand their arguments to libpq, so they
share one translation: the URL's parts become ``host``/``port``/``user``/
``password``/``dbname``, query parameters pass through as libpq keywords
(``?host=/var/run/postgresql`` selects a Unix socket directory, as in libpq's
own URIs), ``connect_args`` win over both, and poolkeeper's defaults fill in
what nobody set.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from poolkeeper._config import URL
from poolkeeper.drivers._options import (
    DEFAULT_CONNECT_TIMEOUT,
    KEEPALIVE_COUNT,
    KEEPALIVE_IDLE,
    KEEPALIVE_INTERVAL,
    present,
)
from poolkeeper.errors import ConfigError

#: libpq keywords poolkeeper sets unless the URL, ``connect_args`` or a
#: ``dsn``/``conninfo`` string in ``connect_args`` already does. libpq ignores
#: the keepalive ones on Unix sockets.
LIBPQ_DEFAULTS: Mapping[str, str] = {
    "connect_timeout": str(DEFAULT_CONNECT_TIMEOUT),
    "keepalives": "1",
    "keepalives_idle": str(KEEPALIVE_IDLE),
    "keepalives_interval": str(KEEPALIVE_INTERVAL),
    "keepalives_count": str(KEEPALIVE_COUNT),
}

_PARAMS_DOC = (
    "https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-PARAMKEYWORDS"
)

#: Keys under which a caller may pass a whole connection string.
_DSN_KEYS = ("dsn", "conninfo")


def libpq_kwargs(
    url: URL,
    connect_args: Mapping[str, Any],
    *,
    parse_conninfo: Callable[[str], Mapping[str, Any]],
    make_conninfo: Callable[..., str],
) -> dict[str, Any]:
    """Build libpq keyword arguments from a parsed URL.

    Args:
        url: The parsed URL.
        connect_args: Extra driver arguments; they override the URL.
        parse_conninfo: The driver's conninfo parser (libpq's
            ``PQconninfoParse``), used to see which keywords a ``dsn`` string
            in ``connect_args`` sets.
        make_conninfo: The driver's conninfo builder; it validates the URL's
            query parameters against libpq's list of keywords.

    Returns:
        Keyword arguments for the driver's ``connect``.

    Raises:
        ConfigError: a query parameter is not a libpq connection keyword.
    """
    kwargs = present(
        host=url.host,
        port=url.port,
        user=url.username,
        password=url.password,
        dbname=url.database,
    )
    if url.query:
        try:
            make_conninfo("", **url.query)
        except Exception as exc:  # the driver's ProgrammingError: unknown keyword
            raise ConfigError(
                f"{url.scheme}:// URL parameters {sorted(url.query)} are not all libpq "
                f"connection keywords ({exc}); supported keywords: {_PARAMS_DOC}"
            ) from None
        kwargs.update(url.query)
    kwargs.update(connect_args)
    already = set(kwargs)
    for key in _DSN_KEYS:
        dsn = kwargs.get(key)
        if isinstance(dsn, str) and dsn:
            already.update(parse_conninfo(dsn))
    defaults = {k: v for k, v in LIBPQ_DEFAULTS.items() if k not in already}
    return {**kwargs, **defaults}
