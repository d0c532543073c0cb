"""Connect errors reach the caller, on every driver, against real servers.

A caller waiting on an empty pool while connects fail gets the driver's own
error at once (within 1 s of a 5 s timeout) when no retry can help: a port
nothing listens on (a server never reached), a bad password, an unknown
database, TLS refused (``sslmode=require`` against the plain-text local
PostgreSQL), an option the driver or server rejects. A server that answered
before and then went away is different: the caller waits out its timeout and
gets ``PoolTimeout`` naming the last connect error.

Bad passwords need a server that checks them: the local PostgreSQL trusts
127.0.0.1, so a private cluster (:class:`~tests.support.pgcluster.PgCluster`)
is started with ``scram-sha-256`` for one role; on MariaDB a user with a
password is created.
"""

from __future__ import annotations

import re
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

import poolkeeper
from tests.conftest import import_driver
from tests.integration.test_pool_drivers import _MARKS, CASES, Case, _close, _make_pool
from tests.support.passwords import mysql_admin, require_password
from tests.support.pgcluster import PgCluster, pg_available

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

#: How long a caller may take to get an error that no retry can fix (the
#: timeout is 5 s: a PoolTimeout after it fails the test).
AT_ONCE = 1.5
TIMEOUT = 5.0
SECRET = "pk-wr0ng-S3cret"


def _free_port() -> int:
    """A loopback port with nothing listening (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _case_params(servers: tuple[str, ...]) -> list[Any]:
    return [
        pytest.param(c, id=c.id, marks=_MARKS[c.server])
        for c in CASES
        if c.server in servers
    ]


@dataclass(frozen=True)
class Attempt:
    """What one caller saw."""

    error: BaseException
    elapsed: float
    stats: poolkeeper.PoolStats


async def _attempt(case: Case, url: str, **options: Any) -> Attempt:
    """Build a pool on ``url``, acquire once with timeout 5 s, report the error."""
    pool = _make_pool(_target_like(case, url), min_size=0, timeout=TIMEOUT, **options)
    started = time.monotonic()
    try:
        if case.is_async:
            conn = await pool.acquire()
            await pool.release(conn)
        else:
            conn = pool.acquire()
            pool.release(conn)
    except Exception as exc:
        elapsed = time.monotonic() - started
        stats = pool.stats()
        await _close(pool)
        return Attempt(exc, elapsed, stats)
    await _close(pool)
    raise AssertionError(f"{case.id}: connected to {url}")


@dataclass(frozen=True)
class _TargetLike:
    case: Case
    url: str


def _target_like(case: Case, url: str) -> Any:
    return _TargetLike(case, url)


def _with(url: str, *, scheme: str, port: int | None = None, **parts: str) -> str:
    split = urlsplit(url)
    netloc = split.netloc
    if port is not None:
        netloc = f"{netloc.rpartition(':')[0]}:{port}"
    if "user" in parts:
        netloc = f"{parts['user']}@{netloc.rpartition('@')[2]}"
    return urlunsplit(
        split._replace(
            scheme=scheme,
            netloc=netloc,
            path=parts.get("path", split.path),
            query=parts.get("query", split.query),
        )
    )


async def _acquire(pool: Any) -> Any:
    if isinstance(pool, poolkeeper.AsyncPool):
        return await pool.acquire()
    return pool.acquire()


def _driver_package(error: BaseException) -> str:
    return type(error).__module__.partition(".")[0]


def _assert_driver_error_at_once(
    case: Case, attempt: Attempt, pattern: str, secret: str | None = None
) -> None:
    error = attempt.error
    assert not isinstance(error, poolkeeper.PoolError), (
        f"{case.id}: got {error!r} after {attempt.elapsed:.2f} s"
    )
    assert attempt.elapsed < AT_ONCE, f"{case.id}: {attempt.elapsed:.2f} s"
    assert re.search(pattern, str(error)), f"{case.id}: {error!r}"
    # The driver's own type (or the OS's), chained to the connect's error.
    assert _driver_package(error) in {
        case.package,
        "psycopg2",
        "pymysql",
        "sqlite3",
        "builtins",
        "asyncpg",
    }
    assert type(error.__cause__) is type(error)
    stats = attempt.stats
    assert stats.connect_errors >= 1 and stats.timeouts == 0
    assert stats.waiting == 0 and stats.size == 0
    if secret is not None:
        chain: list[BaseException] = []
        current: BaseException | None = error
        while current is not None and len(chain) < 6:
            chain.append(current)
            current = current.__cause__ or current.__context__
        for exc in chain:
            assert secret not in str(exc) and secret not in repr(exc)


# -- a refused port, an unknown database, TLS refused, a rejected option --------


@pytest.mark.parametrize("case", _case_params(("postgres", "mysql")))
async def test_refused_port_reaches_the_caller_at_once(
    case: Case, request: pytest.FixtureRequest
) -> None:
    import_driver(request.config, case.package)
    server = request.getfixturevalue(f"{case.server}_url")
    url = _with(server, scheme=case.scheme, port=_free_port())
    attempt = await _attempt(case, url)
    _assert_driver_error_at_once(
        case, attempt, r"refused|Connect call failed|Can't connect"
    )


@pytest.mark.parametrize("case", _case_params(("postgres", "mysql", "sqlite")))
async def test_unknown_database_reaches_the_caller_at_once(
    case: Case, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    import_driver(request.config, case.package)
    if case.server == "sqlite":
        url = f"{case.scheme}:///{tmp_path / 'no-such-dir' / 'db.sqlite'}"
    else:
        server = request.getfixturevalue(f"{case.server}_url")
        url = _with(server, scheme=case.scheme, path="/pk_no_such_database")
    attempt = await _attempt(case, url)
    _assert_driver_error_at_once(
        case, attempt, r"does not exist|Unknown database|unable to open database"
    )


@pytest.mark.parametrize("case", _case_params(("postgres",)))
async def test_tls_refusal_reaches_the_caller_at_once(
    case: Case, request: pytest.FixtureRequest
) -> None:
    """``sslmode=require`` against the plain-text local server."""
    import_driver(request.config, case.package)
    server = request.getfixturevalue("postgres_url")
    url = _with(server, scheme=case.scheme, query="sslmode=require")
    attempt = await _attempt(case, url)
    _assert_driver_error_at_once(case, attempt, r"SSL")


@pytest.mark.parametrize(
    "case", [p for p in _case_params(("postgres", "mysql")) if not p.values[0].generic]
)
async def test_rejected_option_reaches_the_caller_at_once(
    case: Case, request: pytest.FixtureRequest
) -> None:
    import_driver(request.config, case.package)
    server = request.getfixturevalue(f"{case.server}_url")
    url = _with(server, scheme=case.scheme)
    if case.server == "mysql":
        url = _with(url, scheme=case.scheme, query="init_command=SET pk_nosuch_var=1")
        options: dict[str, Any] = {}
        pattern = "Unknown system variable"
    elif case.id == "asyncpg":
        options = {"connect_args": {"server_settings": {"pk_nosuch_param": "1"}}}
        pattern = "unrecognized configuration parameter"
    else:
        options = {"connect_args": {"sslmode": "bogus"}}
        pattern = "invalid sslmode value"
    attempt = await _attempt(case, url, **options)
    _assert_driver_error_at_once(case, attempt, pattern)


# -- bad passwords -------------------------------------------------------------


@pytest.fixture(scope="module")
def scram_cluster() -> Iterator[PgCluster]:
    """A private PostgreSQL where role ``pk_scram`` must give its password."""
    reason = pg_available()
    if reason is not None:
        pytest.skip(f"cannot create a PostgreSQL cluster: {reason}")
    cluster = PgCluster(max_connections=20)
    try:
        cluster.start()
        require_password(cluster, "pk_scram", "pk-right-pw")
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="module")
def mysql_password_user(mysql_url: str) -> Iterator[str]:
    """A MariaDB user with a password; yields its name."""
    admin = mysql_admin(mysql_url)
    user = f"pk_pw_{uuid.uuid4().hex[:8]}"
    with admin.cursor() as cur:
        cur.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'pk-right-pw'")
    try:
        yield user
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP USER IF EXISTS '{user}'@'%'")
        admin.close()


@pytest.mark.parametrize("case", _case_params(("postgres", "mysql")))
async def test_bad_password_reaches_the_caller_at_once_masked(
    case: Case, request: pytest.FixtureRequest
) -> None:
    import_driver(request.config, case.package)
    if case.server == "postgres":
        cluster: PgCluster = request.getfixturevalue("scram_cluster")
        server = f"postgresql://pk_scram:{SECRET}@127.0.0.1:{cluster.port}/postgres"
    else:
        user = request.getfixturevalue("mysql_password_user")
        mysql = urlsplit(request.getfixturevalue("mysql_url"))
        server = f"mysql://{user}:{SECRET}@{mysql.hostname}:{mysql.port or 3306}/test"
    url = _with(server, scheme=case.scheme)
    attempt = await _attempt(case, url)
    _assert_driver_error_at_once(
        case,
        attempt,
        r"password authentication failed|Access denied",
        secret=SECRET,
    )


# -- a server that answered before: wait, then PoolTimeout naming the error ------


@pytest.mark.parametrize(
    "case",
    [
        p
        for p in _case_params(("postgres",))
        if p.values[0].id in ("psycopg", "asyncpg")
    ],
)
async def test_server_gone_after_a_success_times_out_naming_the_error(
    case: Case, request: pytest.FixtureRequest, scram_cluster: PgCluster
) -> None:
    import_driver(request.config, case.package)
    url = _with(scram_cluster.url(dbname="postgres"), scheme=case.scheme)
    pool = _make_pool(
        _target_like(case, url), min_size=0, max_size=1, timeout=1.0, validate="always"
    )
    try:
        conn = await _acquire(pool)
        if case.is_async:
            await pool.release(conn)
        else:
            pool.release(conn)
        scram_cluster.stop()
        started = time.monotonic()
        with pytest.raises(poolkeeper.PoolTimeout) as info:
            await _acquire(pool)
        assert time.monotonic() - started >= 1.0
        assert re.search(
            r"last connect error: \w+: .*(refused|Connect call failed)", str(info.value)
        ), str(info.value)
        assert info.value.__cause__ is not None
    finally:
        scram_cluster.start()
        await _close(pool)


# -- a full server for this user: retried gently, never on the fast interval ----


@pytest.fixture(scope="module")
def busy_pg_role(postgres_url: str) -> Iterator[str]:
    """A PostgreSQL role that may not open any session (CONNECTION LIMIT 0):
    every connect fails at once with "too many connections for role"."""
    import psycopg

    role = f"pk_busy_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(
        postgres_url.replace("postgresql://", "postgresql://", 1)
    ) as admin:
        admin.autocommit = True
        admin.execute(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 0")
    try:
        yield role
    finally:
        with psycopg.connect(postgres_url) as admin:
            admin.autocommit = True
            admin.execute(f"DROP ROLE IF EXISTS {role}")


@pytest.fixture(scope="module")
def busy_mysql_user(mysql_url: str) -> Iterator[str]:
    """A MariaDB user with MAX_USER_CONNECTIONS 1 and that one session held:
    every connect fails at once (1226 on MariaDB, 1203 on MySQL)."""
    admin = mysql_admin(mysql_url)
    user = f"pk_busy_{uuid.uuid4().hex[:8]}"
    with admin.cursor() as cur:
        cur.execute(f"CREATE USER '{user}'@'%' WITH MAX_USER_CONNECTIONS 1")
        cur.execute(f"GRANT ALL ON test.* TO '{user}'@'%'")
    mysql = urlsplit(mysql_url)
    held = mysql_admin(f"mysql://{user}@{mysql.hostname}:{mysql.port or 3306}/test")
    try:
        yield user
    finally:
        held.close()
        with admin.cursor() as cur:
            cur.execute(f"DROP USER IF EXISTS '{user}'@'%'")
        admin.close()


@pytest.mark.parametrize("case", _case_params(("postgres", "mysql")))
async def test_per_user_connection_limit_backs_off(
    case: Case, request: pytest.FixtureRequest
) -> None:
    """A per-role or per-user connection limit is "too many connections"
    too: the pool backs off (a handful of attempts in 2 s), rather than
    retrying every 50 ms while the caller waits (~40 attempts), which would
    hammer a server that refuses for a reason no quick retry fixes."""
    import_driver(request.config, case.package)
    if case.server == "postgres":
        role = request.getfixturevalue("busy_pg_role")
        url = _with(
            request.getfixturevalue("postgres_url"), scheme=case.scheme, user=role
        )
    else:
        user = request.getfixturevalue("busy_mysql_user")
        url = _with(request.getfixturevalue("mysql_url"), scheme=case.scheme, user=user)
        url = _with(url, scheme=case.scheme, path="/test")
    pool = _make_pool(_target_like(case, url), min_size=0, max_size=1, timeout=2.0)
    try:
        with pytest.raises(poolkeeper.PoolTimeout) as info:
            await _acquire(pool)
        assert re.search(
            r"too many connections|max_user_connections", str(info.value.__cause__)
        ), info.value.__cause__
        errors = pool.stats().connect_errors
    finally:
        await _close(pool)
    # Backoff from 0.05 s doubling: attempts at about 0, 0.05, 0.15, 0.35,
    # 0.75 and 1.55 s.
    assert 2 <= errors <= 9, errors


# -- roles that may not log in, databases they may not connect to ---------------


@pytest.fixture(scope="module")
def pg_refusing_grants(postgres_url: str) -> Iterator[tuple[str, str, str]]:
    """A NOLOGIN role, and a LOGIN role with a database it has no CONNECT
    privilege on; yields ``(nologin_role, login_role, database)``."""
    import psycopg

    tag = uuid.uuid4().hex[:8]
    nologin, login, dbname = f"pk_nologin_{tag}", f"pk_noconn_{tag}", f"pk_noconn_{tag}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {nologin} NOLOGIN")
        admin.execute(f"CREATE ROLE {login} LOGIN")
        admin.execute(f"CREATE DATABASE {dbname}")
        admin.execute(f"REVOKE CONNECT ON DATABASE {dbname} FROM PUBLIC")
    try:
        yield nologin, login, dbname
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {dbname}")
            admin.execute(f"DROP ROLE IF EXISTS {nologin}")
            admin.execute(f"DROP ROLE IF EXISTS {login}")


@pytest.mark.parametrize("case", _case_params(("postgres",)))
async def test_nologin_role_reaches_the_caller_at_once(
    case: Case, request: pytest.FixtureRequest
) -> None:
    """'role ... is not permitted to log in' is permanent: before the fix
    libpq's wording was read as transient, so the caller waited out its
    timeout while the pool retried every 50 ms."""
    import_driver(request.config, case.package)
    nologin, _, _ = request.getfixturevalue("pg_refusing_grants")
    server = request.getfixturevalue("postgres_url")
    attempt = await _attempt(case, _with(server, scheme=case.scheme, user=nologin))
    _assert_driver_error_at_once(case, attempt, r"not permitted to log in")


@pytest.mark.parametrize("case", _case_params(("postgres",)))
async def test_no_connect_privilege_reaches_the_caller_at_once(
    case: Case, request: pytest.FixtureRequest
) -> None:
    """'permission denied for database' (42501) is permanent too."""
    import_driver(request.config, case.package)
    _, login, dbname = request.getfixturevalue("pg_refusing_grants")
    server = request.getfixturevalue("postgres_url")
    url = _with(server, scheme=case.scheme, user=login, path=f"/{dbname}")
    attempt = await _attempt(case, url)
    _assert_driver_error_at_once(case, attempt, r"permission denied for database")
