"""mysqlclient adapter (sync only): :class:`MysqldbDriver` for ``mysql+mysqldb://``.

mysqlclient (``import MySQLdb``) wraps the C client library (libmariadb or
libmysqlclient), which keeps the server status flags to itself, so:

- Transaction state: always ``UNKNOWN``; the pool rolls back on return.
- Broken: ``conn.open`` only turns false on ``close()``, and the C library
  keeps its socket after the server hangs up, so the adapter also looks at
  the last error code (``conn.errno()``: "server has gone away" / "lost
  connection"; closing a cursor clears it) and polls the socket with a zero
  timeout: a connection at rest with something to read has been hung up on
  or is out of sync. Neither is a round trip.
- Ping: ``conn.ping()`` (``mysql_ping``; reconnect stays off).
- Close: ``mysql_close`` sends ``COM_QUIT`` and does not wait.
- Defaults: ``connect_timeout=10``; TCP keepalive is tuned on the socket
  behind ``conn.fileno()`` (30 s idle / 10 s interval / 3 probes).
- ``query_timeout``: the C library does not say whether a command is in
  progress, so the pool goes by the time since checkout and the socket's
  quiet time; ``abort`` shuts down the socket. mysqlclient refuses
  ``fileno()`` from a thread other than the one using the connection, so the
  descriptor is remembered at connect (URL form only: a pool built from a
  callable cannot abort mysqlclient connections).
- ``reset_session``: mysqlclient does not expose ``mysql_reset_connection``;
  ``COM_CHANGE_USER`` with the credentials from the URL resets the session the
  same way and re-authenticates. Adapters built from a callable do not know
  the credentials and raise ``NotImplementedError`` (close the connection
  instead).

Note: as with the ``mysql`` command line tool, the host ``localhost`` means
the default Unix socket for the C library; use ``127.0.0.1`` for TCP.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import MySQLdb  # type: ignore[import-untyped]  # mysqlclient ships no stubs

from poolkeeper._config import URL
from poolkeeper._credentials import ConnectArgs
from poolkeeper.drivers._abort import quiet_seconds, shutdown_fd
from poolkeeper.drivers._connect_errors import classify_mysql
from poolkeeper.drivers._mysql import COMMON_PARAMS, mysql_kwargs, refuse_plain_text
from poolkeeper.drivers._mysql_tls import MysqlTls
from poolkeeper.drivers._options import (
    Converter,
    Keepalive,
    has_pending_input,
    to_bool,
)
from poolkeeper.drivers.base import TxStatus
from poolkeeper.errors import ConfigError

#: Client error codes meaning the session is gone: CR_SERVER_GONE_ERROR,
#: CR_SERVER_LOST, CR_SERVER_LOST_EXTENDED, and the server's
#: ER_CLIENT_INTERACTION_TIMEOUT (MySQL 8.0.24+).
_GONE = frozenset({2006, 2013, 2055, 4031})

#: URL parameters accepted by ``mysql+mysqldb://`` and their types.
PARAMS: dict[str, Converter] = {
    **COMMON_PARAMS,
    "collation": str,
    "read_timeout": int,
    "write_timeout": int,
    "compress": to_bool,
    "ssl_mode": str,
    "auth_plugin": str,
    "binary_prefix": to_bool,
    "use_unicode": to_bool,
}


def url_to_kwargs(url: URL, connect_args: dict[str, Any]) -> dict[str, Any]:
    """Turn a parsed URL into ``MySQLdb.connect`` arguments (``connect_args`` win).

    Raises:
        ConfigError: a query parameter is not supported or not convertible.
    """
    return _kwargs(url, connect_args)[0]


def _on_connector_c() -> bool:
    # MariaDB Connector/C reports its own version (3.x); libmysqlclient the
    # MySQL server version it ships with (5.x, 8.x).
    version = str(MySQLdb._mysql.get_client_info())
    return int(version.split(".", 1)[0]) < 5


def _tls_args(tls: MysqlTls) -> dict[str, Any]:
    if tls.mode == "VERIFY_CA" and _on_connector_c():
        raise ConfigError(
            "mysql+mysqldb:// URL parameter ssl-mode=VERIFY_CA is not supported by "
            "this mysqlclient (built on MariaDB Connector/C, which always checks the "
            "host name too): use ssl-mode=VERIFY_IDENTITY, or the pymysql driver"
        )
    return tls.mysqlclient_args()


def _kwargs(
    url: URL, connect_args: dict[str, Any]
) -> tuple[dict[str, Any], Keepalive, MysqlTls | None]:
    kwargs, keepalive, tls = mysql_kwargs(
        url, connect_args, params=PARAMS, tls_args=_tls_args
    )
    # The C library takes whole seconds (and 0 would mean "no limit").
    kwargs["connect_timeout"] = max(1, round(float(kwargs["connect_timeout"])))
    return kwargs, keepalive, tls


def _uses_tls(conn: Any) -> bool:
    # One round trip at connect: the C library's own answer is not exposed.
    with contextlib.closing(conn.cursor()) as cursor:
        cursor.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        row = cursor.fetchone()
    return bool(row and row[1])


class MysqldbDriver:
    """Sync mysqlclient adapter."""

    name = "mysqldb"
    is_async = False
    classify_connect_error = staticmethod(classify_mysql)

    def __init__(
        self, connect: Callable[[], Any], *, session: ConnectArgs | None = None
    ) -> None:
        """Wrap a connect callable.

        Args:
            connect: Zero-argument callable returning a new connection.
            session: The connect arguments, when known: ``reset_session`` needs
                the credentials (asking a password provider for the current
                one) and replays ``sql_mode``, ``init_command`` and
                ``autocommit`` from them.
        """
        self._connect = connect
        self._session = session

    @classmethod
    def from_url(cls, url: URL, connect_args: dict[str, Any]) -> MysqldbDriver:
        """Build the adapter for a parsed URL.

        Args:
            url: The parsed ``mysql+mysqldb://`` URL.
            connect_args: Extra ``MySQLdb.connect`` arguments (plus
                ``keepalives*``); they win over the URL and the defaults.
        """
        kwargs, keepalive, tls = _kwargs(url, connect_args)
        args = ConnectArgs(kwargs)

        def connect() -> Any:
            conn = args.open(MySQLdb.connect)
            # MariaDB Connector/C connects in plain text under REQUIRED.
            refuse_plain_text(conn, tls, _uses_tls, MySQLdb.OperationalError)
            fd = conn.fileno()
            keepalive.apply_fd(fd)
            # For abort() and quiet(), which run in another thread.
            conn._poolkeeper_fd = fd
            return conn

        return cls(connect, session=args)

    def connect(self) -> Any:
        return self._connect()

    @property
    def can_abort(self) -> bool:
        """False when built from a callable: its connections' sockets are unknown."""
        return self._session is not None

    @property
    def can_reset_session(self) -> bool:
        """False when built from a callable: the credentials are unknown."""
        return self._session is not None

    def transaction_status(self, conn: Any) -> TxStatus:
        return TxStatus.UNKNOWN

    def is_closed(self, conn: Any) -> bool:
        """Whether the connection was closed (no I/O, unlike :meth:`is_broken`)."""
        return not conn.open

    def is_broken(self, conn: Any) -> bool:
        if not conn.open:
            return True
        try:
            return conn.errno() in _GONE or has_pending_input(conn.fileno())
        except MySQLdb.Error:
            return True

    def quiet(self, conn: Any) -> float | None:
        """Seconds since data last moved on the connection's socket (None: unknown)."""
        return quiet_seconds(getattr(conn, "_poolkeeper_fd", -1))

    def abort(self, conn: Any) -> None:
        """Cut the connection off at once so a blocked call fails (``query_timeout``)."""
        fd = getattr(conn, "_poolkeeper_fd", None)
        if fd is None:
            raise NotImplementedError(
                "this mysqlclient connection was not opened by poolkeeper; "
                "its socket is unknown"
            )
        shutdown_fd(fd, lambda: bool(conn.open))

    def commit(self, conn: Any) -> None:
        conn.commit()

    def rollback(self, conn: Any) -> None:
        conn.rollback()

    def ping(self, conn: Any) -> None:
        conn.ping()

    def reset_session(self, conn: Any) -> None:
        """Reset the session with ``COM_CHANGE_USER`` and replay the session setup.

        Raises:
            NotImplementedError: the adapter was built from a callable and
                does not know the credentials.
            MySQLdb.Error: the server refused or the connection failed.
        """
        session = self._session
        if session is None:
            raise NotImplementedError(
                "mysqlclient cannot reset a session without the credentials; "
                "build the pool from a mysql+mysqldb:// URL or close the connection"
            )
        get = session.value
        password = get("password", get("passwd", ""))
        database = get("database", get("db"))
        conn.change_user(get("user", ""), password, database)
        with contextlib.closing(conn.cursor()) as cursor:
            if get("sql_mode") is not None:
                cursor.execute("SET sql_mode=%s", (get("sql_mode"),))
            if get("init_command") is not None:
                cursor.execute(get("init_command"))
        autocommit = get("autocommit", False)
        if autocommit is not None:
            conn.autocommit(autocommit)

    def close(self, conn: Any) -> None:
        with contextlib.suppress(Exception):
            conn.close()
