"""The per-family classification of connect errors (no server needed).

The texts are the drivers' own, as measured against PostgreSQL 15 and MariaDB
(see docs/DRIVERS.md); the real-server tests are
``tests/integration/test_connect_errors.py``.
"""

from __future__ import annotations

import socket
import ssl

import pytest

from poolkeeper._core.connect_errors import ConnectFault, first_line, raisable
from poolkeeper.drivers._connect_errors import (
    classify_any,
    classify_asyncpg,
    classify_libpq,
    classify_mysql,
    classify_sqlite,
)

F = ConnectFault


class OperationalError(Exception):
    """Stands for a driver's DB-API error (psycopg, PyMySQL...)."""


class PgError(Exception):
    """Stands for an asyncpg server error: a SQLSTATE class attribute."""

    sqlstate = ""


def pg_error(sqlstate: str, text: str = "") -> PgError:
    error = PgError(text)
    error.sqlstate = sqlstate
    return error


def wrapped(outer: BaseException, cause: BaseException) -> BaseException:
    outer.__cause__ = cause
    return outer


LIBPQ = [
    ('connection to server at "h", port 1 failed: Connection refused', F.REFUSED),
    ('failed: FATAL:  password authentication failed for user "x"', F.AUTH),
    ('failed: FATAL:  no pg_hba.conf entry for host "h", user "x"', F.AUTH),
    ('failed: FATAL:  role "x" does not exist', F.AUTH),
    ('failed: FATAL:  database "nope" does not exist', F.DATABASE),
    ("failed to resolve host 'nohost': [Errno -2] Name or service not known", F.HOST),
    ('could not translate host name "nohost" to address', F.HOST),
    ("failed: server does not support SSL, but SSL was required", F.TLS),
    ("SSL error: certificate verify failed", F.TLS),
    ('server certificate for "localhost" does not match host name "h"', F.TLS),
    ('connection is bad: invalid sslmode value: "bogus"', F.CONFIG),
    ('invalid connection option "bogus"', F.CONFIG),
    ('FATAL:  unrecognized configuration parameter "nosuch"', F.CONFIG),
    ("FATAL:  sorry, too many clients already", F.BUSY),
    ("FATAL:  the database system is starting up", F.TRANSIENT),
    ("timeout expired", F.TRANSIENT),
    ("server closed the connection unexpectedly", F.TRANSIENT),
]


@pytest.mark.parametrize(("text", "fault"), LIBPQ)
def test_libpq_messages(text: str, fault: ConnectFault) -> None:
    assert classify_libpq(OperationalError(text)) is fault


def test_libpq_sqlstate_wins_when_there_is_one() -> None:
    error = OperationalError("whatever the text")
    error.pgcode = "28P01"  # type: ignore[attr-defined]
    assert classify_libpq(error) is F.AUTH


@pytest.mark.parametrize(
    ("error", "fault"),
    [
        (pg_error("28P01"), F.AUTH),
        (pg_error("28000"), F.AUTH),
        (pg_error("3D000"), F.DATABASE),
        (pg_error("42704"), F.CONFIG),
        (pg_error("53300"), F.BUSY),
        (pg_error("57P03"), F.TRANSIENT),
        (ConnectionRefusedError(111, "Connect call failed ('h', 1)"), F.REFUSED),
        (OSError("Multiple exceptions: [Errno 111] Connect call failed"), F.REFUSED),
        # A listener that accepts and resets (asyncio's wording): not refused.
        (ConnectionResetError(104, "Connect call failed ('h', 1)"), F.TRANSIENT),
        (socket.gaierror(-2, "Name or service not known"), F.HOST),
        (ConnectionError('server at "h:5432" rejected SSL upgrade'), F.TLS),
        (ssl.SSLCertVerificationError("certificate verify failed"), F.TLS),
        # The link closed mid-handshake: an outage, not a TLS refusal.
        (ssl.SSLEOFError(8, "EOF occurred in violation of protocol"), F.TRANSIENT),
        (ssl.SSLZeroReturnError(6, "TLS/SSL connection has been closed"), F.TRANSIENT),
        (TimeoutError(), F.TRANSIENT),
        (TypeError("connect() got an unexpected keyword argument"), F.CONFIG),
    ],
)
def test_asyncpg_errors(error: BaseException, fault: ConnectFault) -> None:
    assert classify_asyncpg(error) is fault


@pytest.mark.parametrize(
    ("error", "fault"),
    [
        (OperationalError(1045, "Access denied for user"), F.AUTH),
        (OperationalError(1049, "Unknown database 'nope'"), F.DATABASE),
        (OperationalError(2005, "Unknown server host 'nohost' (-2)"), F.HOST),
        (OperationalError(2002, "Can't connect to server on 'h' (115)"), F.REFUSED),
        (OperationalError(2002, "Can't connect to server on 'h' (110)"), F.TRANSIENT),
        (
            wrapped(
                OperationalError(2003, "Can't connect to MySQL server on 'h'"),
                ConnectionRefusedError(111, "Connection refused"),
            ),
            F.REFUSED,
        ),
        (
            wrapped(
                OperationalError(2003, "Can't connect to MySQL server on 'nohost'"),
                socket.gaierror(-2, "Name or service not known"),
            ),
            F.HOST,
        ),
        (OperationalError(2003, "Can't connect (timed out)"), F.TRANSIENT),
        (OperationalError(1040, "Too many connections"), F.BUSY),
        (OperationalError(1193, "Unknown system variable 'x'"), F.CONFIG),
        (OperationalError(2026, "SSL connection error"), F.TLS),
        (
            OperationalError(
                1129, "Host 'h' is blocked because of many connection errors"
            ),
            F.AUTH,
        ),
        (
            OperationalError(1130, "Host 'h' is not allowed to connect to this server"),
            F.AUTH,
        ),
        # A TLS handshake cut short (mysqlclient, PyMySQL, aiomysql wording).
        (
            OperationalError(2026, "TLS/SSL error: unexpected eof while reading"),
            F.TRANSIENT,
        ),
        # mysqlclient's wording for a refused certificate stays a TLS error.
        (
            OperationalError(
                2026,
                "TLS/SSL error: error:0A000086:SSL routines::certificate verify failed",
            ),
            F.TLS,
        ),
        (
            OperationalError(
                2026, "TLS/SSL error: Validation of SSL server certificate failed"
            ),
            F.TLS,
        ),
        (
            wrapped(
                OperationalError(
                    2003,
                    "Can't connect to MySQL server on 'h' ([SSL: UNEXPECTED_EOF_WHILE_READING] EOF occurred in violation of protocol)",
                ),
                ssl.SSLEOFError(
                    8,
                    "[SSL: UNEXPECTED_EOF_WHILE_READING] EOF occurred in violation of protocol",
                ),
            ),
            F.TRANSIENT,
        ),
        (
            wrapped(
                OperationalError(2003, "Can't connect to MySQL server on 'h'"),
                ConnectionResetError(104, "Connection reset by peer"),
            ),
            F.TRANSIENT,
        ),
        (
            wrapped(
                OperationalError(2003, "Can't connect to MySQL server on 'h'"),
                ssl.SSLCertVerificationError("certificate verify failed"),
            ),
            F.TLS,
        ),
    ],
)
def test_mysql_errors(error: BaseException, fault: ConnectFault) -> None:
    assert classify_mysql(error) is fault


def test_sqlite_and_any() -> None:
    assert classify_sqlite(OperationalError("unable to open database file")) is (
        F.DATABASE
    )
    assert classify_sqlite(OperationalError("database is locked")) is F.TRANSIENT
    # An unknown package: SQLSTATE, then MySQL-style code, then the OS.
    assert classify_any(pg_error("3D000")) is F.DATABASE
    assert classify_any(OperationalError(1045, "Access denied")) is F.AUTH
    assert classify_any(ConnectionRefusedError(111, "refused")) is F.REFUSED
    assert classify_any(ConnectionResetError("reset")) is F.TRANSIENT


def test_a_copy_per_caller_chained_to_the_original() -> None:
    error = OperationalError(1045, "Access denied")
    copy = raisable(error)
    assert type(copy) is OperationalError and copy is not error
    assert copy.args == error.args and copy.__cause__ is error
    assert first_line(OperationalError("line one\nline two"), ()) == (
        "OperationalError: line one"
    )
