"""What the libpq-based adapters (psycopg 3, psycopg2, aiopg) share.

- URL -> libpq keyword arguments (:func:`libpq_kwargs`): the URL's parts
  become ``host``/``port``/``user``/``password``/``dbname``, query parameters
  pass through as libpq keywords (``?host=/var/run/postgresql`` selects a
  Unix socket directory, as in libpq's own URIs), ``connect_args`` win over
  both, and poolkeeper's defaults fill in what nobody set.
- Multi-host connects (:func:`sync_connector`, :func:`async_connector`):
  libpq's own host loop when it can do the whole job, else poolkeeper's.
- libpq's transaction status codes and what they mean to the pool
  (:data:`TX_STATUS`, :data:`PQ_SETTLED`), read without I/O by every adapter.

Nothing here imports a driver: each adapter passes its driver's functions in.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from poolkeeper._config import URL
from poolkeeper.drivers._hosts import (
    ROLE_QUERY,
    HostTarget,
    async_role_of,
    connect_hosts,
    connect_hosts_async,
    host_target,
    role_of,
)
from poolkeeper.drivers._options import (
    DEFAULT_CONNECT_TIMEOUT,
    KEEPALIVE_COUNT,
    KEEPALIVE_IDLE,
    KEEPALIVE_INTERVAL,
    present,
)
from poolkeeper.drivers.base import TxStatus
from poolkeeper.errors import ConfigError

#: libpq's ``PGTransactionStatusType`` (``PQtransactionStatus()``), the same
#: numbers whichever driver reads them.
PQ_IDLE, PQ_ACTIVE, PQ_INTRANS, PQ_INERROR, PQ_UNKNOWN = range(5)

#: The statuses of a connection between messages: no command in progress
#: (``ACTIVE``) and not closed or broken (``UNKNOWN``).
PQ_SETTLED = frozenset({PQ_IDLE, PQ_INTRANS, PQ_INERROR})

#: libpq status -> the pool's :class:`TxStatus`; ``ACTIVE`` and ``UNKNOWN``
#: are left to each adapter (absent: :attr:`TxStatus.UNKNOWN`).
TX_STATUS: Mapping[int, TxStatus] = {
    PQ_IDLE: TxStatus.IDLE,
    PQ_INTRANS: TxStatus.INTRANS,
    PQ_INERROR: TxStatus.INERROR,
}

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
    hosts = url.hosts or ((url.host, url.port),)
    kwargs = present(
        host=",".join(h or "" for h, _ in hosts) if len(hosts) > 1 else url.host,
        port=_port_list(hosts) if len(hosts) > 1 else url.port,
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


def _port_list(hosts: tuple[tuple[str | None, int | None], ...]) -> str | None:
    ports = [str(p) if p is not None else "" for _, p in hosts]
    return ",".join(ports) if any(ports) else None


def libpq_target(url: URL, connect_args: Mapping[str, Any]) -> HostTarget:
    """Validate the URL's multi-host settings (see :func:`host_target`).

    Raises:
        ConfigError: a host list, port list, ``target_session_attrs``,
            ``load_balance_hosts`` or ``connect_timeout`` value is not valid.
    """
    target = host_target(url, connect_args, timeout_keys=("connect_timeout",))
    if target.connect_timeout is None:
        target = HostTarget(
            target.hosts,
            target.target_session_attrs,
            target.load_balance_hosts,
            float(DEFAULT_CONNECT_TIMEOUT),
        )
    return target


def libpq_does_it(target: HostTarget, libpq_version: int) -> bool:
    """Tell whether this libpq runs ``target``'s host loop completely itself.

    ``load_balance_hosts`` came with libpq 16, the role values other than
    ``any`` and ``read-write`` with libpq 14.
    """
    if target.load_balance_hosts != "disable" and libpq_version < 160000:
        return False
    return target.target_session_attrs in ("any", "read-write") or (
        libpq_version >= 140000
    )


def one_host(
    kwargs: Mapping[str, Any], host: str | None, port: int | None
) -> dict[str, Any]:
    """Return libpq keyword arguments for one host of a multi-host target."""
    single = {
        k: v
        for k, v in kwargs.items()
        if k not in ("host", "port", "target_session_attrs", "load_balance_hosts")
    }
    single.update(present(host=host, port=port))
    return single


def sync_connector(
    target: HostTarget,
    kwargs: Mapping[str, Any],
    connect: Callable[..., Any],
    libpq_version: int,
) -> Callable[[], Any]:
    """Return a zero-argument connect for a sync libpq driver.

    libpq's own multi-host support when it is complete, else poolkeeper's
    host loop (:func:`~poolkeeper.drivers._hosts.connect_hosts`).
    """
    if target.is_plain or libpq_does_it(target, libpq_version):
        return lambda: connect(**kwargs)
    return lambda: connect_hosts(
        target,
        lambda h, p: connect(**one_host(kwargs, h, p)),
        lambda conn: role_of(conn, _fetch_role_row),
        _close,
    )


def async_connector(
    target: HostTarget,
    kwargs: Mapping[str, Any],
    connect: Callable[..., Awaitable[Any]],
    fetch_role_row: Callable[[Any], Awaitable[Sequence[Any]]],
    *,
    native: bool,
) -> Callable[[], Awaitable[Any]]:
    """Return a zero-argument connect for an asyncio libpq driver (see :func:`sync_connector`).

    ``fetch_role_row`` runs :data:`~poolkeeper.drivers._hosts.ROLE_QUERY` on a
    new connection (when libpq does not report its role) and returns the row.
    """
    if target.is_plain or native:
        return lambda: connect(**kwargs)

    async def close(conn: Any) -> None:
        await conn.close()

    return lambda: connect_hosts_async(
        target,
        lambda h, p: connect(**one_host(kwargs, h, p)),
        lambda conn: async_role_of(conn, fetch_role_row),
        close,
    )


def _fetch_role_row(conn: Any) -> Sequence[Any]:
    with conn.cursor() as cursor:
        cursor.execute(ROLE_QUERY)
        row: Sequence[Any] = cursor.fetchone()
    conn.rollback()
    return row


def _close(conn: Any) -> None:
    conn.close()
