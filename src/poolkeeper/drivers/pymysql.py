"""PyMySQL adapter (sync only): :class:`PymysqlDriver` for ``mysql+pymysql://`` and ``mysql://``.

- Transaction state: the server's ``SERVER_STATUS_IN_TRANS`` flag, with the
  limits explained in :mod:`poolkeeper.drivers._mysql` (``UNKNOWN`` when
  autocommit is off and the flag is clear).
- Broken: PyMySQL drops its socket (``conn.open`` turns false) as soon as a
  read or write finds the server gone.
- Ping: ``ping(reconnect=False)``, a ``COM_PING`` round trip; the adapter never
  lets the driver reconnect behind the pool's back.
- Close: ``close()`` writes a 5-byte ``COM_QUIT`` and drops the socket without
  waiting for an answer; if the write fails the socket is dropped anyway.
- Defaults: ``connect_timeout=10``, and TCP keepalive tuned to 30 s idle /
  10 s interval / 3 probes (PyMySQL turns ``SO_KEEPALIVE`` on but leaves the
  operating system's two-hour idle time).
- ``query_timeout``: PyMySQL does not say whether a command is in progress,
  so the pool goes by the time since checkout and the socket's quiet time;
  ``abort`` shuts down the socket (the blocked call raises error 2013).
- ``reset_session``: ``COM_RESET_CONNECTION``, then PyMySQL's connect-time
  session setup (``SET NAMES``, ``sql_mode``, autocommit, ``init_command``).
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Callable
from typing import Any

import pymysql

from poolkeeper._config import URL
from poolkeeper._credentials import ConnectArgs
from poolkeeper.drivers._abort import socket_probes
from poolkeeper.drivers._connect_errors import classify_mysql
from poolkeeper.drivers._mysql import (
    COM_RESET_CONNECTION,
    COMMON_PARAMS,
    mysql_kwargs,
    refuse_plain_text,
    reset_statements,
    tx_status,
)
from poolkeeper.drivers._mysql_tls import MysqlTls
from poolkeeper.drivers._options import Converter, Keepalive, to_bool, to_number
from poolkeeper.drivers.base import TxStatus

#: URL parameters accepted by ``mysql+pymysql://`` and their types.
PARAMS: dict[str, Converter] = {
    **COMMON_PARAMS,
    "collation": str,
    "read_timeout": to_number,
    "write_timeout": to_number,
    "max_allowed_packet": int,
    "bind_address": str,
    "binary_prefix": to_bool,
    "ssl_ca": str,
    "ssl_cert": str,
    "ssl_key": str,
    "ssl_key_password": str,
    "ssl_disabled": to_bool,
    "ssl_verify_cert": to_bool,
    "ssl_verify_identity": to_bool,
}


def url_to_kwargs(url: URL, connect_args: dict[str, Any]) -> dict[str, Any]:
    """Turn a parsed URL into ``pymysql.connect`` arguments (``connect_args`` win).

    The ``keepalives*`` settings are left out (see :func:`mysql_kwargs`).

    Raises:
        ConfigError: a query parameter is not supported or not convertible.
    """
    return _kwargs(url, connect_args)[0]


def _kwargs(
    url: URL, connect_args: dict[str, Any]
) -> tuple[dict[str, Any], Keepalive, MysqlTls | None]:
    return mysql_kwargs(
        url, connect_args, params=PARAMS, tls_args=MysqlTls.pymysql_args
    )


def _uses_tls(conn: Any) -> bool:
    return isinstance(getattr(conn, "_sock", None), ssl.SSLSocket)


def _fd(conn: Any) -> int:
    sock = getattr(conn, "_sock", None)
    try:
        return int(sock.fileno()) if sock is not None else -1
    except Exception:
        return -1


_quiet, _abort = socket_probes(_fd, lambda conn: bool(conn.open))


class PymysqlDriver:
    """Sync PyMySQL adapter."""

    name = "pymysql"
    is_async = False
    classify_connect_error = staticmethod(classify_mysql)

    def __init__(self, connect: Callable[[], Any]) -> None:
        self._connect = connect

    @classmethod
    def from_url(cls, url: URL, connect_args: dict[str, Any]) -> PymysqlDriver:
        """Build the adapter for a parsed URL.

        Args:
            url: The parsed ``mysql+pymysql://`` URL.
            connect_args: Extra ``pymysql.connect`` arguments (plus
                ``keepalives*``); they win over the URL and the defaults.
        """
        kwargs, keepalive, tls = _kwargs(url, connect_args)
        args = ConnectArgs(kwargs)

        def connect() -> Any:
            conn = args.open(pymysql.connect)
            # PyMySQL given TLS arguments refuses by itself; this keeps the
            # promise should a version not.
            refuse_plain_text(conn, tls, _uses_tls, pymysql.err.OperationalError)
            # PyMySQL exposes no keepalive timings; its socket attribute is
            # private but has been stable since the first release.
            keepalive.apply(getattr(conn, "_sock", None))
            return conn

        return cls(connect)

    def connect(self) -> Any:
        return self._connect()

    def transaction_status(self, conn: Any) -> TxStatus:
        if not conn.open:
            return TxStatus.UNKNOWN
        return tx_status(conn.server_status)

    def is_broken(self, conn: Any) -> bool:
        return not conn.open

    quiet = staticmethod(_quiet)
    abort = staticmethod(_abort)

    def commit(self, conn: Any) -> None:
        conn.commit()

    def rollback(self, conn: Any) -> None:
        conn.rollback()

    def ping(self, conn: Any) -> None:
        conn.ping(reconnect=False)

    def reset_session(self, conn: Any) -> None:
        """Send ``COM_RESET_CONNECTION`` and replay PyMySQL's session setup.

        The command rolls back, drops temporary tables, user variables and
        prepared statements, releases locks and resets session variables.

        Raises:
            pymysql.err.Error: the server lacks the command (MySQL < 5.7.3,
                MariaDB < 10.2.4) or the connection failed; close it.
        """
        conn._execute_command(COM_RESET_CONNECTION, "")
        conn._read_ok_packet()
        with conn.cursor() as cursor:
            for statement in reset_statements(conn):
                cursor.execute(statement)

    def close(self, conn: Any) -> None:
        try:
            conn.close()
        except Exception:
            # Already closed, or the goodbye failed: just drop the socket.
            with contextlib.suppress(Exception):
                conn._force_close()
