"""Sorting connect errors into :class:`~poolkeeper._core.connect_errors.ConnectFault`.

One function per driver family, all here, each adapter pointing at its own as
``classify_connect_error`` (see :func:`poolkeeper.drivers.base.connect_classifier`):

- libpq (psycopg 3, psycopg2, aiopg): libpq reports connect errors without a
  SQLSTATE (psycopg's ``sqlstate`` is None), so the message is the clue;
  a SQLSTATE is used when there is one.
- asyncpg: server errors carry a SQLSTATE class attribute; client-side
  problems are ``ClientConfigurationError``, ``ssl`` errors, a plain
  ``ConnectionError`` for a refused TLS upgrade, or the OS's ``OSError``.
- MySQL/MariaDB (PyMySQL, aiomysql, mysqlclient): the error code in
  ``args[0]`` (1045 access denied, 1049 unknown database, 2003/2002 cannot
  connect, 2005 unknown host, 2026 TLS), then the wrapped ``OSError``.
- sqlite: "unable to open database file".

:func:`classify_any` tries them all, for the generic DB-API and callable
adapters. Every function looks only at the exception (types, attributes and
text, plus its ``__cause__`` chain) and imports no driver.
"""

from __future__ import annotations

import errno
import re
import socket
import ssl
from collections.abc import Callable

from poolkeeper._core.connect_errors import ConnectFault
from poolkeeper.drivers._hosts import NoMatchingHost

Classifier = Callable[[BaseException], ConnectFault]

F = ConnectFault

#: PostgreSQL SQLSTATEs a server answers a connect with (libpq and asyncpg).
_PG_SQLSTATES: dict[str, ConnectFault] = {
    "28000": F.AUTH,  # invalid_authorization_specification (pg_hba, role)
    "28P01": F.AUTH,  # invalid_password
    "42501": F.AUTH,  # insufficient_privilege: no CONNECT on the database
    "3D000": F.DATABASE,  # invalid_catalog_name
    "42704": F.CONFIG,  # undefined_object: unrecognized configuration parameter
    "22023": F.CONFIG,  # invalid_parameter_value
    "53300": F.BUSY,  # too_many_connections
    "57P03": F.TRANSIENT,  # cannot_connect_now (starting up, shutting down)
}

# libpq's connect messages, most specific first. Retryable ones (busy,
# transient) are checked first: a multi-host error may mention several kinds,
# and then a retry can help.
_LIBPQ_MESSAGES: tuple[tuple[re.Pattern[str], ConnectFault], ...] = (
    (
        # The server's limit, a role's or a database's CONNECTION LIMIT.
        re.compile(
            r"too many clients|too many connections|remaining connection slots",
            re.IGNORECASE,
        ),
        F.BUSY,
    ),
    (
        re.compile(
            r"starting up|"
            r"shutting down|in recovery mode|timeout expired|timed out|"
            # target_session_attrs found no host of the wanted role: a
            # failover or promotion may bring one (libpq's own wording).
            r"in hot standby mode|session is read-only|session is not read-only|"
            # The link closed in the middle of the TLS handshake (a restart,
            # a proxy dropping it): an outage, not a TLS misconfiguration
            # (libpq with OpenSSL 3: "SSL error: unexpected eof while reading").
            r"unexpected eof|SSL SYSCALL error|closed the connection unexpectedly|"
            r"SSL connection has been closed unexpectedly",
            re.IGNORECASE,
        ),
        F.TRANSIENT,
    ),
    (
        re.compile(
            r"password authentication failed|authentication failed|"
            r'role "[^"]*" does not exist|no pg_hba\.conf entry|pg_hba\.conf rejects|'
            r"no password supplied|password is required|"
            # NOLOGIN (28000), no CONNECT privilege on the database (42501).
            r'is not permitted to log in|permission denied for database "',
        ),
        F.AUTH,
    ),
    (re.compile(r'database "[^"]*" does not exist'), F.DATABASE),
    (
        re.compile(
            r"could not translate host name|failed to resolve host|"
            r"Name or service not known|nodename nor servname|"
            r"Temporary failure in name resolution",
        ),
        F.HOST,
    ),
    (
        re.compile(
            r"server does not support SSL|SSL error|certificate verify failed|"
            r"does not match host name|certificate|SSL connection|sslmode value "
            r'"require" invalid',
            re.IGNORECASE,
        ),
        F.TLS,
    ),
    (
        re.compile(
            r"invalid connection option|invalid [a-z_]+ value|invalid port number|"
            r"invalid integer value|unrecognized configuration parameter|"
            r'invalid value for parameter|missing "=" after|invalid URI',
        ),
        F.CONFIG,
    ),
    (
        re.compile(r"Connection refused|No such file or directory"),
        F.REFUSED,
    ),
)

_DNS_TEXT = re.compile(
    r"Name or service not known|nodename nor servname|"
    r"Temporary failure in name resolution|No address associated"
)
_TIMEOUT_TEXT = re.compile(r"timed out|timeout|\(110\)", re.IGNORECASE)

#: MySQL/MariaDB error codes at connect.
_MYSQL_CODES: dict[int, ConnectFault] = {
    1044: F.AUTH,  # access denied to the database
    1045: F.AUTH,  # access denied (password)
    1698: F.AUTH,  # access denied (auth plugin)
    # Refused for the client's host: not allowed (a grant for another host
    # only), or blocked after max_connect_errors until FLUSH HOSTS; retrying
    # cannot help, and only adds to the count that blocked it.
    1129: F.AUTH,
    1130: F.AUTH,
    1049: F.DATABASE,  # unknown database
    2005: F.HOST,  # unknown server host (mysqlclient)
    2026: F.TLS,  # SSL connection error
    1193: F.CONFIG,  # unknown system variable (init_command, sql_mode)
    1231: F.CONFIG,  # variable can't be set to the value
    1040: F.BUSY,  # too many connections
    1203: F.BUSY,  # the user's max_user_connections (MySQL)
    1226: F.BUSY,  # the user's max_user_connections, max_connections_per_hour (MariaDB)
}
#: "Can't connect" codes: refused, a timeout, or (PyMySQL, aiomysql) DNS.
_MYSQL_CANNOT_CONNECT = frozenset({2002, 2003})

#: A TLS error that only says the link closed in the middle (a restart, a
#: proxy or load balancer dropping connections): an outage, not a refusal.
#: MariaDB Connector/C (mysqlclient) words it "TLS/SSL error: unexpected eof
#: while reading" under code 2026; libpq has its own rule above.
_TLS_CUT_TEXT = re.compile(
    r"unexpected eof|EOF occurred in violation of protocol|SSL SYSCALL error|"
    r"connection reset|Broken pipe",
    re.IGNORECASE,
)


def _tls_cut(error: BaseException) -> bool:
    """Whether an ``ssl`` error only reports a link closed mid-handshake."""
    if isinstance(
        error, ssl.SSLEOFError | ssl.SSLZeroReturnError | ssl.SSLSyscallError
    ):
        return True
    return bool(_TLS_CUT_TEXT.search(str(error)))


def _chain(error: BaseException) -> list[BaseException]:
    """``error`` and its causes (explicit or implicit), at most a few deep."""
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in seen and len(seen) < 5:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _os_fault(error: BaseException) -> ConnectFault | None:
    """The fault of an OS-level error anywhere in ``error``'s chain, if any."""
    for exc in _chain(error):
        if isinstance(exc, ssl.SSLError) and _tls_cut(exc):
            return F.TRANSIENT
        if isinstance(exc, ssl.SSLError | ssl.CertificateError):
            return F.TLS
        if isinstance(exc, socket.gaierror):
            return F.HOST
        if isinstance(exc, ConnectionRefusedError):
            return F.REFUSED
        if isinstance(exc, OSError) and exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            return F.REFUSED
        if isinstance(
            exc, ConnectionResetError | ConnectionAbortedError | BrokenPipeError
        ):
            # A listener that accepted, then dropped the link (a restart, a
            # proxy, a TLS handshake cut short): there is a server; retry.
            return F.TRANSIENT
        if isinstance(exc, OSError) and "Connect call failed" in str(exc):
            # asyncio's "Multiple exceptions" for a name with several addresses
            # (no errno), or one address that answered with a reset: a peer
            # that accepted and dropped the connection, not a refusal.
            if exc.errno not in (None, errno.ECONNREFUSED):
                return F.TRANSIENT
            return F.TRANSIENT if _TIMEOUT_TEXT.search(str(exc)) else F.REFUSED
    return None


def _client_fault(error: BaseException) -> ConnectFault | None:
    """A bad argument rejected by the driver's own code before any I/O."""
    if isinstance(error, TypeError | ValueError) and not isinstance(
        error, UnicodeError
    ):
        return F.CONFIG
    return None


def _sqlstate(error: BaseException) -> str | None:
    code = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
    return code if isinstance(code, str) else None


def classify_libpq(error: BaseException) -> ConnectFault:
    """Classify a connect error of psycopg 3, psycopg2 or aiopg."""
    if isinstance(error, NoMatchingHost):
        return F.TRANSIENT  # a host answered, with another role: see above
    code = _sqlstate(error)
    if code in _PG_SQLSTATES:
        return _PG_SQLSTATES[code]
    text = str(error)
    for pattern, fault in _LIBPQ_MESSAGES:
        if pattern.search(text):
            return fault
    if type(error).__name__ == "ProgrammingError":
        # psycopg's conninfo parser: an unknown keyword, a malformed string.
        return F.CONFIG
    return _os_fault(error) or _client_fault(error) or F.TRANSIENT


def classify_asyncpg(error: BaseException) -> ConnectFault:
    """Classify a connect error of asyncpg."""
    if isinstance(error, NoMatchingHost):
        return F.TRANSIENT  # a host answered, with another role
    code = _sqlstate(error)
    if code in _PG_SQLSTATES:
        return _PG_SQLSTATES[code]
    if code is not None and code.startswith("28"):
        return F.AUTH
    if type(error).__name__ == "ClientConfigurationError":
        return F.CONFIG
    if "rejected SSL upgrade" in str(error):
        return F.TLS
    return _os_fault(error) or _client_fault(error) or F.TRANSIENT


def classify_mysql(error: BaseException) -> ConnectFault:
    """Classify a connect error of PyMySQL, aiomysql or mysqlclient."""
    args = getattr(error, "args", ())
    code = args[0] if args and isinstance(args[0], int) else None
    if code == 2026 and _tls_cut(error):
        return F.TRANSIENT
    if code in _MYSQL_CODES:
        return _MYSQL_CODES[code]
    if code in _MYSQL_CANNOT_CONNECT:
        fault = _os_fault(error)
        if fault is not None:
            return fault
        text = str(error)
        if _DNS_TEXT.search(text):
            return F.HOST
        if _TIMEOUT_TEXT.search(text):
            return F.TRANSIENT
        # mysqlclient reports a refused TCP connect as "(111)" or "(115)" and
        # a missing Unix socket as "(2)": nothing listens there.
        return F.REFUSED
    return _os_fault(error) or _client_fault(error) or F.TRANSIENT


def classify_sqlite(error: BaseException) -> ConnectFault:
    """Classify a connect error of sqlite3 or aiosqlite."""
    if "unable to open database file" in str(error):
        return F.DATABASE
    return _client_fault(error) or F.TRANSIENT


_BY_PACKAGE: dict[str, Classifier] = {
    "psycopg": classify_libpq,
    "psycopg2": classify_libpq,
    "aiopg": classify_libpq,
    "asyncpg": classify_asyncpg,
    "pymysql": classify_mysql,
    "MySQLdb": classify_mysql,
    "aiomysql": classify_mysql,
    "sqlite3": classify_sqlite,
    "aiosqlite": classify_sqlite,
}


def classify_any(error: BaseException) -> ConnectFault:
    """Classify a connect error of any driver (generic DB-API and callable adapters).

    The exception's package picks the family; an unknown package is tried
    with the SQLSTATE and MySQL-code rules, then as an OS error.
    """
    package = type(error).__module__.partition(".")[0]
    classify = _BY_PACKAGE.get(package)
    if classify is not None:
        return classify(error)
    if _sqlstate(error) is not None:
        return classify_asyncpg(error)
    args = getattr(error, "args", ())
    if args and isinstance(args[0], int) and not isinstance(error, OSError):
        return classify_mysql(error)
    return _os_fault(error) or _client_fault(error) or F.TRANSIENT
