"""Pieces shared by the MySQL/MariaDB adapters (PyMySQL, aiomysql, mysqlclient).

URL handling: ``mysql+driver://user:pass@host:3306/db?charset=utf8mb4``. A
Unix socket is ``?unix_socket=/run/mysqld/mysqld.sock`` (or a host that is an
absolute path, percent-encoded). Query parameters are checked against the
driver's connect arguments and converted to the types it expects;
``keepalives*`` parameters are poolkeeper's own (see
:class:`~poolkeeper.drivers._options.Keepalive`).

Transaction state: the MySQL protocol reports ``SERVER_STATUS_IN_TRANS`` in OK
packets. PyMySQL and aiomysql keep the flag from OK packets only (not from
the EOF packet that ends a result set), so a ``SELECT`` that implicitly opens
a transaction under ``autocommit=0`` is not seen. The adapters therefore
report ``INTRANS`` when the flag is set, ``IDLE`` when it is clear and
autocommit is on (then only ``BEGIN``, which answers with an OK packet, can
open a transaction), and ``UNKNOWN`` otherwise, which makes the pool roll back
on return: one cheap round trip, and never a stale snapshot. MySQL has no
"failed transaction" state: a failing statement leaves the transaction open
and usable, so ``INERROR`` is never reported.

Also here: the check that a connection asked to use TLS does
(:func:`refuse_plain_text`), and the session setup replayed after
``COM_RESET_CONNECTION`` (:func:`session_setup_sql`, :func:`reset_statements`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from poolkeeper._config import URL
from poolkeeper.drivers._mysql_tls import CR_SSL_CONNECTION_ERROR, MysqlTls, split_tls
from poolkeeper.drivers._options import (
    DEFAULT_CONNECT_TIMEOUT,
    KEEPALIVE_PARAMS,
    Converter,
    Keepalive,
    convert_query,
    present,
    to_bool,
    to_number,
)
from poolkeeper.drivers.base import TxStatus
from poolkeeper.errors import ConfigError

# Module constants: an Enum member read off its class costs a metaclass hook.
_IDLE, _INTRANS, _UNKNOWN = TxStatus.IDLE, TxStatus.INTRANS, TxStatus.UNKNOWN

#: ``SERVER_STATUS_IN_TRANS`` and ``SERVER_STATUS_AUTOCOMMIT`` protocol flags.
SERVER_STATUS_IN_TRANS = 0x0001
SERVER_STATUS_AUTOCOMMIT = 0x0002

#: The protocol command that resets a session without re-authenticating
#: (MySQL >= 5.7.3, MariaDB >= 10.2.4). PyMySQL and aiomysql have no method
#: for it, so the adapters send it through their command layer.
COM_RESET_CONNECTION = 0x1F

#: URL parameters every MySQL driver here accepts.
COMMON_PARAMS: dict[str, Converter] = {
    "unix_socket": str,
    "charset": str,
    "connect_timeout": to_number,
    "init_command": str,
    "sql_mode": str,
    "autocommit": to_bool,
    "local_infile": to_bool,
    "client_flag": int,
    "read_default_file": str,
    "read_default_group": str,
    "program_name": str,
    **KEEPALIVE_PARAMS,
}


def mysql_kwargs(
    url: URL,
    connect_args: Mapping[str, Any],
    *,
    params: Mapping[str, Converter],
    database_key: str = "database",
    tls_args: Callable[[MysqlTls], dict[str, Any]],
) -> tuple[dict[str, Any], Keepalive, MysqlTls | None]:
    """Build a MySQL driver's connect arguments from a parsed URL.

    Args:
        url: The parsed URL.
        connect_args: Extra driver arguments; they win over the URL.
        params: The URL parameters the driver supports, with converters.
        database_key: The driver's name for the database argument.
        tls_args: Translates the URL's ``ssl-mode``/``ssl-ca``/... request
            (see :mod:`poolkeeper.drivers._mysql_tls`) into driver arguments.

    Returns:
        The connect arguments (with ``connect_timeout`` defaulted to 10 s),
        the keepalive settings poolkeeper applies after connecting, and the
        TLS request (None when the URL makes none).

    Raises:
        ConfigError: a query parameter is not supported or not convertible,
            or the TLS parameters are not a supported combination.
    """
    if len(url.hosts) > 1:
        raise ConfigError(
            f"{url.scheme}:// names {len(url.hosts)} hosts; a MySQL URL takes one "
            "(several hosts are a PostgreSQL feature)"
        )
    url, tls = split_tls(url, connect_args)
    kwargs = present(
        host=url.host,
        port=url.port,
        user=url.username,
        password=url.password,
    )
    if url.database is not None:
        kwargs[database_key] = url.database
    kwargs.update(convert_query(url.scheme, url.query, params))
    if tls is not None:
        kwargs.update(tls_args(tls))
    kwargs.update(connect_args)
    host = kwargs.get("host")
    if isinstance(host, str) and host.startswith("/"):
        # mysql://user@%2Frun%2Fmysqld%2Fmysqld.sock/db: a socket path as host.
        kwargs.setdefault("unix_socket", kwargs.pop("host"))
    kwargs.setdefault("connect_timeout", DEFAULT_CONNECT_TIMEOUT)
    return kwargs, Keepalive.pop_from(kwargs), tls


def tx_status(server_status: int | None) -> TxStatus:
    """Map the last server status flags to a :class:`TxStatus` (see module doc)."""
    if server_status is None:
        return _UNKNOWN
    if server_status & SERVER_STATUS_IN_TRANS:
        return _INTRANS
    if server_status & SERVER_STATUS_AUTOCOMMIT:
        return _IDLE
    return _UNKNOWN


def session_setup_sql(
    *,
    escape: Any,
    charset: str | None,
    collation: str | None,
    sql_mode: str | None,
    init_command: str | None,
    autocommit: bool | None,
) -> list[str]:
    """Build the statements that restore what the driver set up at connect.

    ``COM_RESET_CONNECTION`` puts session variables back to the server's
    global values, including the character set (``SET NAMES``), ``sql_mode``
    and autocommit, while the driver's connection object still believes its
    own settings apply. The statements follow the drivers' connect order
    (names, sql_mode, init_command, autocommit) and take one round trip when
    there is no ``init_command``.
    """
    first = []
    if charset:
        first.append(
            f"NAMES {charset}" + (f" COLLATE {collation}" if collation else "")
        )
    if sql_mode is not None:
        first.append(f"sql_mode={escape(sql_mode)}")
    last = [f"autocommit={int(autocommit)}"] if autocommit is not None else []
    if init_command is None:
        first += last
        last = []
    statements = ["SET " + ", ".join(first)] if first else []
    if init_command is not None:
        statements.append(init_command)
    if last:
        statements.append("SET " + ", ".join(last))
    return statements


def reset_statements(conn: Any) -> list[str]:
    """Return :func:`session_setup_sql` for a PyMySQL or aiomysql connection.

    Both keep the connect-time settings on the connection object (aiomysql
    has no ``collation``).
    """
    return session_setup_sql(
        escape=conn.escape,
        charset=conn.charset,
        collation=getattr(conn, "collation", None),
        sql_mode=conn.sql_mode,
        init_command=conn.init_command,
        autocommit=conn.autocommit_mode,
    )


def refuse_plain_text(
    conn: Any,
    tls: MysqlTls | None,
    uses_tls: Callable[[Any], bool],
    error: Callable[[int, str], Exception],
) -> None:
    """Close ``conn`` and raise if TLS was required and the connection has none.

    Some drivers given TLS arguments still connect in plain text when the
    server offers no TLS (see :mod:`~poolkeeper.drivers._mysql_tls`); this
    keeps the promise for all of them.

    Args:
        conn: A new connection.
        tls: The TLS settings from the URL and ``connect_args`` (None: none).
        uses_tls: Tells whether ``conn`` runs over TLS.
        error: The driver's ``OperationalError`` class (``(errno, message)``).

    Raises:
        Exception: ``error(CR_SSL_CONNECTION_ERROR, ...)``, once ``conn`` is closed.
    """
    if tls is not None and tls.enforced and not uses_tls(conn):
        conn.close()
        raise error(CR_SSL_CONNECTION_ERROR, tls.refusal())
