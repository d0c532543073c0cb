"""TLS (``ssl-mode``) and credentials on every MySQL driver, on servers the test starts.

Servers: a private ``mariadbd`` with TLS (a certificate made by the test,
naming only ``localhost``) and a password-protected user; the machine's own
MariaDB on 3306 as the plain-text server (it has no TLS).

For PyMySQL and mysqlclient through :class:`poolkeeper.Pool` and aiomysql
through :class:`poolkeeper.AsyncPool`: ``VERIFY_IDENTITY`` works against
``localhost``; a wrong host name, an untrusted CA and a plain-text server under
``REQUIRED`` are refused (never a silent fallback to plain text); a wrong
password fails at once with one login attempt; a password provider sees the
password changed by ``ALTER USER`` between connects, while connections already
open keep working.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

import poolkeeper
from tests.support.faultproxy import FaultProxy
from tests.support.mariadb import MariaDbServer, mariadb_available
from tests.support.matrix import (
    Driver,
    Outcome,
    RotatingSecret,
    assert_connected,
    assert_refused,
    certs_or_skip,
    chain_text,
    checkout,
    collect_leaks,
    driver_param,
    record,
    rotation,
)
from tests.support.tls import Certs
from tests.support.waiting import settle

USER = "pk_user"
PASSWORD = "first-S3cret-pw"
SECRETS = (PASSWORD,)

WRONG_NAME = r"(Hostname|IP address) mismatch|[Vv]alidation of SSL server certificate failed|certificate verify failed"
UNTRUSTED = r"certificate verify failed|[Vv]alidation of SSL server certificate failed|self-signed|unable to get local issuer"
PLAIN_TEXT = r"requires TLS but the server does not support it|SSL is required"

#: Whether the session uses TLS, and as whom: ``(1, 'pk_user@%')``.
TLS_AND_USER = (
    "SELECT VARIABLE_VALUE <> '', CURRENT_USER() FROM information_schema.SESSION_STATUS"
    " WHERE VARIABLE_NAME = 'SSL_CIPHER'"
)


DRIVERS = [
    Driver("pymysql", "pymysql", False),
    Driver("mysqldb", "MySQLdb", False),
    Driver("aiomysql", "aiomysql", True),
]


@pytest.fixture(scope="session")
def mysql_certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return certs_or_skip(tmp_path_factory, "mysql-certs")


@pytest.fixture(scope="session")
def tls_mariadb(mysql_certs: Certs) -> Iterator[MariaDbServer]:
    """A private MariaDB with TLS and a password-protected user."""
    reason = mariadb_available()
    if reason is not None:
        pytest.skip(f"cannot start a private MariaDB: {reason}")
    server = MariaDbServer(
        mysql_certs.server_cert, mysql_certs.server_key, mysql_certs.ca
    )
    try:
        server.start()
        server.execute(f"CREATE USER '{USER}'@'%%' IDENTIFIED BY %s", (PASSWORD,))
        yield server
    finally:
        server.destroy()


@pytest.fixture(scope="session")
def tcp_option_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # mysqlclient takes the host "localhost" to mean the Unix socket; an option
    # file setting the protocol makes it connect to localhost over TCP (TLS).
    # MariaDB Connector/C reads the value as a number (1: MYSQL_PROTOCOL_TCP).
    path = tmp_path_factory.mktemp("mysql-opts") / "tcp.cnf"
    path.write_text("[client]\nprotocol=1\n")
    return path


@pytest.fixture(params=DRIVERS, ids=[d.name for d in DRIVERS])
def driver(request: pytest.FixtureRequest) -> Driver:
    return driver_param(request)


def tls_url(
    driver: Driver,
    server: MariaDbServer,
    options: Path,
    *,
    host: str = "localhost",
    password: str | None = PASSWORD,
    **params: str,
) -> str:
    auth = f"{USER}:{password}" if password is not None else USER
    if driver.name == "mysqldb" and host == "localhost":
        params = {"read_default_file": str(options), **params}
    query = f"?{urlencode(params)}" if params else ""
    return f"mysql+{driver.name}://{auth}@{host}:{server.port}/{query}"


def verify_url(
    driver: Driver,
    server: MariaDbServer,
    options: Path,
    ca: Path,
    *,
    mode: str = "VERIFY_IDENTITY",
    **kwargs: Any,
) -> str:
    """A URL with ``ssl-mode=mode`` and ``ssl-ca=ca``."""
    tls = {"ssl-mode": mode, "ssl-ca": str(ca)}
    return tls_url(driver, server, options, **kwargs, **tls)


def fetch(conn: Any) -> tuple[Any, ...]:
    cursor = conn.cursor()
    try:
        cursor.execute(TLS_AND_USER)
        return tuple(cursor.fetchone())
    finally:
        cursor.close()


async def afetch(conn: Any) -> tuple[Any, ...]:
    async with conn.cursor() as cursor:
        await cursor.execute(TLS_AND_USER)
        return tuple(await cursor.fetchone())


def run(driver: Driver, url: str, **pool_args: Any) -> Outcome:
    return checkout(
        url, is_async=driver.is_async, fetch=fetch, afetch=afetch, **pool_args
    )


# --- the matrix --------------------------------------------------------------


def test_verify_identity_good(
    driver: Driver,
    tls_mariadb: MariaDbServer,
    mysql_certs: Certs,
    tcp_option_file: Path,
) -> None:
    url = verify_url(driver, tls_mariadb, tcp_option_file, mysql_certs.ca)
    row = assert_connected(driver.name, "verify-identity good", run(driver, url))
    assert row == (1, f"{USER}@%")


def test_wrong_host_name(
    driver: Driver,
    tls_mariadb: MariaDbServer,
    mysql_certs: Certs,
    tcp_option_file: Path,
) -> None:
    url = verify_url(
        driver, tls_mariadb, tcp_option_file, mysql_certs.ca, host="127.0.0.1"
    )
    assert_refused(driver.name, "wrong name", run(driver, url), WRONG_NAME, SECRETS)


def test_untrusted_ca(
    driver: Driver,
    tls_mariadb: MariaDbServer,
    mysql_certs: Certs,
    tcp_option_file: Path,
) -> None:
    url = verify_url(driver, tls_mariadb, tcp_option_file, mysql_certs.other_ca)
    assert_refused(driver.name, "untrusted CA", run(driver, url), UNTRUSTED, SECRETS)


def test_plain_text_server_under_required(driver: Driver, mysql_url: str) -> None:
    # The machine's own MariaDB has no TLS (have_ssl=DISABLED): REQUIRED must
    # refuse it instead of falling back to plain text.
    plain = mysql_url.replace("mysql://", f"mysql+{driver.name}://", 1)
    url = f"{plain}{'&' if '?' in plain else '?'}ssl-mode=REQUIRED"
    outcome = run(driver, url)
    assert_refused(driver.name, "plain-text server", outcome, PLAIN_TEXT, ())


def _denied(server: MariaDbServer) -> int:
    rows = server.execute("SHOW GLOBAL STATUS LIKE 'Access_denied_errors'")
    return int(rows[0][1])


def test_wrong_password(
    driver: Driver,
    tls_mariadb: MariaDbServer,
    mysql_certs: Certs,
    tcp_option_file: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    wrong = "Wrong-pw-0451"
    before = _denied(tls_mariadb)
    url = verify_url(
        driver, tls_mariadb, tcp_option_file, mysql_certs.ca, password=wrong
    )
    with caplog.at_level(logging.DEBUG, logger="poolkeeper"):
        outcome = run(driver, url)
    record(driver.name, "wrong password", outcome)
    text = chain_text(outcome.error)
    assert "Access denied for user" in text
    assert outcome.elapsed < 1.0, outcome.elapsed
    assert outcome.leaks == [], outcome.leaks
    for seen in (text, outcome.pool_repr, caplog.text):
        assert wrong not in seen
    # One login attempt for one checkout: an account lockout is not fed.
    time.sleep(0.3)
    assert _denied(tls_mariadb) == before + 1


def test_aiomysql_connect_cancelled_during_tls_leaves_nothing(
    tls_mariadb: MariaDbServer, mysql_certs: Certs
) -> None:
    """close() cancels a connect at every stage, the TLS upgrade included
    (a proxy slows each packet down to make the stages last): aiomysql, which
    closes a connection on cancel only during a packet read, must not leave
    one to the garbage collector nor a session on the server."""
    pytest.importorskip("aiomysql")
    with FaultProxy((tls_mariadb.host, tls_mariadb.port)) as proxy:
        proxy.latency(0.003)
        base = f"mysql+aiomysql://{USER}:{PASSWORD}@localhost:{proxy.port}/"
        for ca in (mysql_certs.ca, mysql_certs.other_ca):  # handshake ok / refused
            query = urlencode({"ssl-mode": "VERIFY_IDENTITY", "ssl-ca": str(ca)})
            url = f"{base}?{query}"
            asyncio.run(_open_and_close(url, [i * 0.001 for i in range(45)]))
            assert collect_leaks() == []
    assert settle(lambda: _sessions_of(tls_mariadb, USER) == 0)


async def _open_and_close(url: str, delays: list[float]) -> None:
    for delay in delays:
        pool = poolkeeper.AsyncPool(url, min_size=1, max_size=1, reconnect_max=0.05)
        await pool.open()
        await asyncio.sleep(delay)
        await pool.close(timeout=0)
    # A TLS handshake cancelled mid-way is torn down by asyncio's SSL protocol
    # a few loop turns later: let it finish before asyncio.run() ends the loop.
    await asyncio.sleep(0.1)


def _sessions_of(server: MariaDbServer, user: str) -> int:
    rows = server.execute(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = %s", (user,)
    )
    return int(rows[0][0])


def test_rotated_provider_password(
    driver: Driver,
    tls_mariadb: MariaDbServer,
    mysql_certs: Certs,
    tcp_option_file: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """ALTER USER between connects: old connections keep working, new ones use the new password."""
    new = ("second-S3cret-pw", "third-S3cret-pw")

    def set_on_server(password: str) -> None:
        tls_mariadb.execute(f"ALTER USER '{USER}'@'%%' IDENTIFIED BY %s", (password,))

    secret = RotatingSecret(PASSWORD, set_on_server)
    url = verify_url(
        driver, tls_mariadb, tcp_option_file, mysql_certs.ca, password=None
    )
    secret.rotate(PASSWORD)
    started = time.monotonic()
    try:
        with caplog.at_level(logging.DEBUG, logger="poolkeeper"):
            shown = rotation(
                url,
                secret,
                new,
                is_async=driver.is_async,
                fetch=fetch,
                afetch=afetch,
                expected=(1, f"{USER}@%"),
            )
    finally:
        set_on_server(PASSWORD)
    outcome = Outcome((1,), None, time.monotonic() - started, shown)
    record(driver.name, "rotated provider password", outcome)
    # first connect; second after the rotation; third: a stale answer, then
    # the fresh one asked for after the authentication failure.
    assert secret.calls == [PASSWORD, new[0], new[0], new[1]]
    for value in (PASSWORD, *new):
        assert value not in caplog.text
        assert value not in shown


def test_verify_ca_does_not_check_the_name(
    driver: Driver,
    tls_mariadb: MariaDbServer,
    mysql_certs: Certs,
    tcp_option_file: Path,
) -> None:
    """VERIFY_CA means the same on every driver: the CA is checked, the name is not.

    mysqlclient on MariaDB Connector/C cannot check one without the other, so
    there VERIFY_CA is a ConfigError rather than a different meaning.
    """

    def url(ca: Path) -> str:
        return verify_url(
            driver, tls_mariadb, tcp_option_file, ca, mode="VERIFY_CA", host="127.0.0.1"
        )

    if driver.name == "mysqldb":
        from poolkeeper.drivers.mysqldb import _on_connector_c

        if _on_connector_c():
            with pytest.raises(poolkeeper.ConfigError, match="VERIFY_IDENTITY"):
                poolkeeper.Pool(url(mysql_certs.ca))
            return
    row = assert_connected(
        driver.name, "verify-ca by IP", run(driver, url(mysql_certs.ca))
    )
    assert row == (1, f"{USER}@%")
    outcome = run(driver, url(mysql_certs.other_ca))
    assert_refused(driver.name, "verify-ca untrusted", outcome, UNTRUSTED, SECRETS)


def test_aiomysql_tls_pool_closes_its_sockets_before_close_returns(
    tls_mariadb: MariaDbServer, mysql_certs: Certs
) -> None:
    """A TLS connection's socket is closed when the pool's close() returns:
    asyncio ends a TLS transport a few loop turns after aiomysql's close, so a
    loop that ends right after the pool (asyncio.run) must not leave it to
    the garbage collector."""
    pytest.importorskip("aiomysql")
    query = urlencode({"ssl-mode": "VERIFY_CA", "ssl-ca": str(mysql_certs.ca)})
    url = f"mysql+aiomysql://{USER}:{PASSWORD}@127.0.0.1:{tls_mariadb.port}/?{query}"

    async def once() -> None:
        pool = poolkeeper.AsyncPool(url, min_size=2, max_size=2)
        async with pool, pool.connection() as conn:
            cursor = await conn.cursor()
            await cursor.execute("SELECT 1")
            await cursor.close()

    for _ in range(10):
        asyncio.run(once())
        assert collect_leaks() == []


# --- a TLS handshake cut short is an outage, not a TLS misconfiguration --------


@pytest.mark.parametrize("limit", [200, 400, 1200])
def test_tls_handshake_cut_short_is_waited_out(
    driver: Driver,
    limit: int,
    tls_mariadb: MariaDbServer,
    mysql_certs: Certs,
    tcp_option_file: Path,
) -> None:
    """A link closed in the middle of the TLS handshake (a restarting server,
    a proxy or load balancer dropping connections) is transient: a caller on
    an empty pool waits and gets a connection once links pass again. Python's
    ``ssl`` reports such a cut as ``SSLEOFError`` or ``SSLZeroReturnError``
    (an ``ssl.SSLError``), which used to be read as a TLS misconfiguration:
    permanent, so the caller got the error at once. ``limit``: bytes each
    link passes before the proxy closes it (the MariaDB greeting and the
    SSLRequest are about 120; the certificate follows the ClientHello)."""
    with FaultProxy((tls_mariadb.host, tls_mariadb.port)) as proxy:
        proxy.truncate_after(limit)
        url = tls_url(
            driver,
            tls_mariadb,
            tcp_option_file,
            **{"ssl-mode": "REQUIRED", "connect_timeout": "3"},
        ).replace(f":{tls_mariadb.port}/", f":{proxy.port}/")
        heal = threading.Timer(0.6, proxy.pass_through)
        started = time.monotonic()
        heal.start()
        try:
            outcome = run(driver, url, min_size=0, timeout=5)
        finally:
            heal.cancel()
        waited = time.monotonic() - started
    row = assert_connected(driver.name, f"cut at {limit} bytes", outcome)
    assert row == (1, f"{USER}@%")
    assert 0.5 < waited < 4.0, (waited, chain_text(outcome.error))
