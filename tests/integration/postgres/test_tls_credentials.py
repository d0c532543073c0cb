"""TLS and credentials on every PostgreSQL driver, against servers the test starts.

Servers:

- a private cluster with ``ssl = on``, a certificate made by the test naming
  only ``localhost``, ``hostssl ... scram-sha-256`` and ``hostnossl ... reject``
  (so the only way in is TLS plus a password);
- the same cluster seen by a client that trusts a different CA (the
  "untrusted CA" case);
- the machine's plain-text server on 5432 (trust auth, no TLS).

For each driver (psycopg and psycopg2 through :class:`poolkeeper.Pool`,
asyncpg and aiopg through :class:`poolkeeper.AsyncPool`): ``verify-full``
works against ``localhost``; a wrong host name, an untrusted CA and a
plain-text server under ``require`` are refused; a wrong password fails at
once with one login attempt; a password provider is called per connect, sees
the password rotated by ``ALTER ROLE`` between connects (connections already
open keep working), and is asked once more when its first answer is stale.
No password appears in an error, ``repr``, log record or stats.

Set ``POOLKEEPER_TLS_REPORT=/path`` to record each outcome (see
:mod:`tests.support.matrix`).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.support.matrix import (
    Driver,
    Outcome,
    RotatingSecret,
    assert_connected,
    assert_refused,
    certs_or_skip,
    chain_text,
    checkout,
    driver_param,
    record,
    rotation,
)
from tests.support.pgcluster import PgCluster, pg_available
from tests.support.tls import Certs

ROLE = "pk_user"
PASSWORD = "first-S3cret-pw"
SECRETS = (PASSWORD,)

WRONG_NAME = r"does not match host name|(Hostname|IP address) mismatch"
UNTRUSTED = r"certificate verify failed"
PLAIN_TEXT = r"does not support SSL|rejected SSL upgrade"
BAD_PASSWORD = r"password authentication failed"


DRIVERS = [
    Driver("psycopg", "psycopg", False),
    Driver("psycopg2", "psycopg2", False),
    Driver("asyncpg", "asyncpg", True),
    Driver("aiopg", "aiopg", True),
]
_IDS = [d.name for d in DRIVERS]


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return certs_or_skip(tmp_path_factory, "certs")


@pytest.fixture(scope="session")
def tls_cluster(certs: Certs) -> Iterator[PgCluster]:
    """A private PostgreSQL 15 that only takes TLS and scram-sha-256 on TCP."""
    reason = pg_available()
    if reason is not None:
        pytest.skip(f"cannot create a PostgreSQL cluster: {reason}")
    cluster = PgCluster(
        settings={
            "ssl": True,
            "ssl_cert_file": "server.crt",
            "ssl_key_file": "server.key",
            "password_encryption": "scram-sha-256",
        },
        hba=[
            "hostssl all all 127.0.0.1/32 scram-sha-256",
            "hostnossl all all 0.0.0.0/0 reject",
        ],
        files={"server.crt": certs.server_cert, "server.key": certs.server_key},
    )
    try:
        cluster.start()
        cluster.set_password(ROLE, PASSWORD, create=True)
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(params=DRIVERS, ids=_IDS)
def driver(request: pytest.FixtureRequest) -> Driver:
    return driver_param(request)


def tls_url(
    driver: Driver,
    cluster: PgCluster,
    *,
    host: str = "localhost",
    password: str | None = PASSWORD,
    **params: str,
) -> str:
    auth = f"{ROLE}:{password}" if password is not None else ROLE
    query = urlencode({"sslmode": "verify-full", **params})
    return f"postgresql+{driver.name}://{auth}@{host}:{cluster.port}/postgres?{query}"


# --- running one pool, sync or async -----------------------------------------

SSL_AND_USER = (
    "SELECT s.ssl, current_user FROM pg_stat_ssl s WHERE s.pid = pg_backend_pid()"
)


def fetch(driver: Driver, conn: Any, query: str) -> tuple[Any, ...]:
    if driver.name == "psycopg":
        row = conn.execute(query).fetchone()
    else:
        with conn.cursor() as cursor:
            cursor.execute(query)
            row = cursor.fetchone()
    return tuple(row)


async def afetch(driver: Driver, conn: Any, query: str) -> tuple[Any, ...]:
    if driver.name == "asyncpg":
        return tuple(await conn.fetchrow(query))
    cursor = await conn.cursor()
    try:
        await cursor.execute(query)
        return tuple(await cursor.fetchone())
    finally:
        cursor.close()


def run(driver: Driver, url: str, **pool_args: Any) -> Outcome:
    return checkout(
        url,
        is_async=driver.is_async,
        fetch=lambda conn: fetch(driver, conn, SSL_AND_USER),
        afetch=lambda conn: afetch(driver, conn, SSL_AND_USER),
        **pool_args,
    )


# --- the matrix --------------------------------------------------------------


def test_verify_full_good(driver: Driver, tls_cluster: PgCluster, certs: Certs) -> None:
    outcome = run(driver, tls_url(driver, tls_cluster, sslrootcert=str(certs.ca)))
    assert assert_connected(driver.name, "verify-full good", outcome) == (True, ROLE)


def test_wrong_host_name(driver: Driver, tls_cluster: PgCluster, certs: Certs) -> None:
    url = tls_url(driver, tls_cluster, host="127.0.0.1", sslrootcert=str(certs.ca))
    assert_refused(driver.name, "wrong name", run(driver, url), WRONG_NAME, SECRETS)


def test_untrusted_ca(driver: Driver, tls_cluster: PgCluster, certs: Certs) -> None:
    url = tls_url(driver, tls_cluster, sslrootcert=str(certs.other_ca))
    assert_refused(driver.name, "untrusted CA", run(driver, url), UNTRUSTED, SECRETS)


def test_plain_text_server_under_require(driver: Driver, postgres_url: str) -> None:
    # The machine's own server on 5432 has no TLS (trust authentication).
    plain = postgres_url.replace("postgresql://", f"postgresql+{driver.name}://", 1)
    url = f"{plain}{'&' if '?' in plain else '?'}sslmode=require"
    assert_refused(
        driver.name, "plain-text server", run(driver, url), PLAIN_TEXT, SECRETS
    )


def _auth_failures(cluster: PgCluster) -> int:
    return cluster.logfile.read_text(errors="replace").count(
        f'password authentication failed for user "{ROLE}"'
    )


def _wait_for_log(cluster: PgCluster, count: int) -> int:
    deadline = time.monotonic() + 2.0
    seen = _auth_failures(cluster)
    while seen < count and time.monotonic() < deadline:
        time.sleep(0.02)
        seen = _auth_failures(cluster)
    return seen


def test_wrong_password(
    driver: Driver,
    tls_cluster: PgCluster,
    certs: Certs,
    caplog: pytest.LogCaptureFixture,
) -> None:
    wrong = "Wrong-pw-0451"
    before = _auth_failures(tls_cluster)
    url = tls_url(driver, tls_cluster, password=wrong, sslrootcert=str(certs.ca))
    with caplog.at_level(logging.DEBUG, logger="poolkeeper"):
        outcome = run(driver, url)
    record(driver.name, "wrong password", outcome)
    assert outcome.error is not None
    assert re.search(BAD_PASSWORD, chain_text(outcome.error))
    assert outcome.elapsed < 1.0, outcome.elapsed
    assert wrong not in str(outcome.error)
    assert wrong not in outcome.pool_repr
    assert wrong not in caplog.text
    # One login attempt for one checkout: an account lockout policy is not fed.
    time.sleep(0.3)
    assert _wait_for_log(tls_cluster, before + 1) == before + 1


def test_rotated_provider_password(
    driver: Driver,
    tls_cluster: PgCluster,
    certs: Certs,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """ALTER ROLE between connects: old connections keep working, new ones use the new password."""
    new = ("second-S3cret-pw", "third-S3cret-pw")
    secret = RotatingSecret(PASSWORD, lambda pw: tls_cluster.set_password(ROLE, pw))
    url = tls_url(driver, tls_cluster, password=None, sslrootcert=str(certs.ca))
    secret.rotate(PASSWORD)
    started = time.monotonic()
    try:
        with caplog.at_level(logging.DEBUG, logger="poolkeeper"):
            shown = rotation(
                url,
                secret,
                new,
                is_async=driver.is_async,
                fetch=lambda conn: fetch(driver, conn, SSL_AND_USER),
                afetch=lambda conn: afetch(driver, conn, SSL_AND_USER),
                expected=(True, ROLE),
            )
    finally:
        tls_cluster.set_password(ROLE, PASSWORD)
    outcome = Outcome((True,), None, time.monotonic() - started, shown)
    record(driver.name, "rotated provider password", outcome)
    # first connect; second after the rotation; third: a stale answer, then
    # the fresh one asked for after the authentication failure.
    assert secret.calls == [PASSWORD, new[0], new[0], new[1]]
    for value in (PASSWORD, *new):
        assert value not in caplog.text
        assert value not in shown


# --- a TLS handshake cut short is an outage, not a TLS misconfiguration --------


@pytest.mark.parametrize(
    ("scheme", "is_async"),
    [("psycopg", False), ("psycopg", True), ("psycopg2", False), ("asyncpg", True)],
    ids=["psycopg", "psycopg-async", "psycopg2", "asyncpg"],
)
def test_tls_handshake_cut_short_is_waited_out(
    scheme: str, is_async: bool, tls_cluster: PgCluster
) -> None:
    """A link closed in the middle of the TLS handshake (a restarting
    server, a proxy or load balancer dropping connections) is transient: the
    caller on an empty pool waits and gets a connection once links pass
    again. libpq 16 with OpenSSL 3 words it "SSL error: unexpected eof while
    reading", which the "SSL error" rule read as a TLS misconfiguration:
    permanent, so psycopg's caller got the error at once."""
    import asyncio
    import threading

    import poolkeeper
    from tests.support.faultproxy import FaultProxy

    with FaultProxy((tls_cluster.host, tls_cluster.port)) as proxy:
        proxy.truncate_after(200)  # past the SSLRequest, inside the handshake
        url = (
            f"postgresql+{scheme}://{ROLE}:{PASSWORD}@127.0.0.1:{proxy.port}"
            "/postgres?sslmode=require&connect_timeout=3"
        )
        heal = threading.Timer(0.6, proxy.pass_through)
        started = time.monotonic()
        heal.start()
        try:
            if is_async:

                async def main() -> None:
                    pool = poolkeeper.AsyncPool(url, min_size=0, timeout=5)
                    async with pool, pool.connection():
                        pass

                asyncio.run(main())
            else:
                sync_pool = poolkeeper.Pool(url, min_size=0, timeout=5)
                with sync_pool, sync_pool.connection():
                    pass
        finally:
            heal.cancel()
        waited = time.monotonic() - started
    assert 0.5 < waited < 4.0, waited
