"""One contract suite for every driver adapter, run against the real servers.

Each parameter is one adapter (sync or asyncio), built from a URL exactly as a
pool builds it, and exercised directly: no pool involved. Sync adapters run
inside the same async test functions (their calls simply block briefly), so a
new driver adds one :class:`Case`, not a copy of the suite.

Drivers differ in what they can know without I/O; each case states the
transaction states it may report, and whether it has a full session reset
and a keepalive default, and the suite holds it to exactly those. The
``dbapi-*`` cases wrap real connections in a class poolkeeper does not know
(:mod:`tests.support.generic_dbapi`), so the generic DB-API adapter meets the
real servers too. A missing driver package skips its cases locally and fails
the run with ``CI=true``.
"""

from __future__ import annotations

import inspect
import os
import socket
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest

from poolkeeper.drivers import driver_for_url, ops_for_connection
from poolkeeper.drivers.base import TxStatus, query_watch
from poolkeeper.drivers.dbapi import AsyncDBAPIDriver, DBAPIDriver
from tests.conftest import import_driver
from tests.support.generic_dbapi import generic_connect

IDLE, INTRANS, INERROR, UNKNOWN = (
    TxStatus.IDLE,
    TxStatus.INTRANS,
    TxStatus.INERROR,
    TxStatus.UNKNOWN,
)


@dataclass(frozen=True)
class Case:
    """One adapter under test and what it is able to report."""

    id: str
    server: str  # "postgres", "mysql" or "sqlite"
    scheme: str
    is_async: bool
    package: str
    idle: frozenset[TxStatus] = frozenset({IDLE})
    intrans: frozenset[TxStatus] = frozenset({INTRANS})
    failed: frozenset[TxStatus] = frozenset({INERROR})
    query: str = ""
    explicit_begin: bool = False  # the driver does not open transactions itself
    keepalive: Callable[[Any], int | None] | None = field(default=None, repr=False)
    has_reset: bool = True  # the adapter has reset_session (the pool's reset="full")
    generic: bool = False  # wrapped: handled by the generic DB-API adapter


def _sock_idle(sock: Any) -> int | None:
    if sock is None or not hasattr(socket, "TCP_KEEPIDLE"):
        return None
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE):
        return 0
    return int(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE))


def _fd_idle(fd: int) -> int | None:
    with socket.socket(fileno=os.dup(fd)) as sock:
        return _sock_idle(sock)


_MYSQL_NO_FLAG = frozenset({UNKNOWN})  # also the generic adapter: state unknown

CASES = [
    Case(
        "psycopg",
        "postgres",
        "postgresql+psycopg",
        False,
        "psycopg",
        keepalive=lambda c: int(c.info.get_parameters()["keepalives_idle"]),
    ),
    Case(
        "psycopg-async",
        "postgres",
        "postgresql+psycopg",
        True,
        "psycopg",
        keepalive=lambda c: int(c.info.get_parameters()["keepalives_idle"]),
    ),
    Case(
        "psycopg2",
        "postgres",
        "postgresql+psycopg2",
        False,
        "psycopg2",
        keepalive=lambda c: int(c.get_dsn_parameters()["keepalives_idle"]),
    ),
    Case(
        "aiopg",
        "postgres",
        "postgresql+aiopg",
        True,
        "aiopg",
        explicit_begin=True,
        keepalive=lambda c: int(c.raw.get_dsn_parameters()["keepalives_idle"]),
    ),
    Case(
        "asyncpg",
        "postgres",
        "postgresql+asyncpg",
        True,
        "asyncpg",
        # asyncpg knows a transaction is open, not that it failed.
        failed=frozenset({INTRANS}),
        explicit_begin=True,
        keepalive=lambda c: _sock_idle(c._transport.get_extra_info("socket")),
    ),
    Case(
        "pymysql",
        "mysql",
        "mysql+pymysql",
        False,
        "pymysql",
        # autocommit off: a clear IN_TRANS flag proves nothing (see _mysql.py).
        idle=_MYSQL_NO_FLAG,
        failed=frozenset({INTRANS}),
        keepalive=lambda c: _sock_idle(c._sock),
    ),
    Case(
        "pymysql-autocommit",
        "mysql",
        "mysql+pymysql",
        False,
        "pymysql",
        failed=frozenset({INTRANS}),
        query="autocommit=true",
        explicit_begin=True,
        keepalive=lambda c: _sock_idle(c._sock),
    ),
    Case(
        "aiomysql",
        "mysql",
        "mysql+aiomysql",
        True,
        "aiomysql",
        idle=_MYSQL_NO_FLAG,
        failed=frozenset({INTRANS}),
        keepalive=lambda c: _sock_idle(c._writer.transport.get_extra_info("socket")),
    ),
    Case(
        "aiomysql-autocommit",
        "mysql",
        "mysql+aiomysql",
        True,
        "aiomysql",
        failed=frozenset({INTRANS}),
        query="autocommit=true",
        explicit_begin=True,
        keepalive=lambda c: _sock_idle(c._writer.transport.get_extra_info("socket")),
    ),
    Case(
        "mysqldb",
        "mysql",
        "mysql+mysqldb",
        False,
        "MySQLdb",
        idle=_MYSQL_NO_FLAG,
        intrans=_MYSQL_NO_FLAG,
        failed=_MYSQL_NO_FLAG,
        keepalive=lambda c: _fd_idle(c.fileno()),
    ),
    Case(
        "sqlite3",
        "sqlite",
        "sqlite",
        False,
        "sqlite3",
        failed=frozenset({INTRANS}),
        has_reset=False,
    ),
    Case(
        "aiosqlite",
        "sqlite",
        "sqlite+aiosqlite",
        True,
        "aiosqlite",
        failed=frozenset({INTRANS}),
        has_reset=False,
    ),
    # The generic DB-API adapter: state unknown, rollback on return, SELECT 1,
    # broken = the connection's own closed/open flag, no reset, no keepalive.
    Case(
        "dbapi-psycopg2",
        "postgres",
        "postgresql",
        False,
        "psycopg2",
        has_reset=False,
        generic=True,
        idle=_MYSQL_NO_FLAG,
        intrans=_MYSQL_NO_FLAG,
        failed=_MYSQL_NO_FLAG,
    ),
    Case(
        "dbapi-pymysql",
        "mysql",
        "mysql",
        False,
        "pymysql",
        has_reset=False,
        generic=True,
        idle=_MYSQL_NO_FLAG,
        intrans=_MYSQL_NO_FLAG,
        failed=_MYSQL_NO_FLAG,
    ),
    Case(
        "dbapi-aiomysql",
        "mysql",
        "mysql",
        True,
        "aiomysql",
        has_reset=False,
        generic=True,
        idle=_MYSQL_NO_FLAG,
        intrans=_MYSQL_NO_FLAG,
        failed=_MYSQL_NO_FLAG,
    ),
]

_SERVER_MARKS = {
    "postgres": pytest.mark.postgres,
    "mysql": pytest.mark.mysql,
    "sqlite": pytest.mark.sqlite,
}

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


async def call(driver: Any, method: str, *args: Any) -> Any:
    """Call an adapter method, awaiting it when the adapter is async."""
    return await _await(getattr(driver, method)(*args))


async def run(conn: Any, sql: str) -> list[tuple[Any, ...]]:
    """Run one statement through the driver's own API; return the rows."""
    if hasattr(conn, "fetch"):  # asyncpg has no cursors
        return [tuple(r) for r in await conn.fetch(sql)]
    cursor = await _await(conn.cursor())
    try:
        await _await(cursor.execute(sql))
        if cursor.description is None:
            return []
        return [tuple(r) for r in await _await(cursor.fetchall())]
    finally:
        await _await(cursor.close())


# --- servers: an admin connection outside the adapter under test -------------


class Admin:
    """Autocommit side connection: creates tables, counts rows, kills sessions."""

    def __init__(self, server: str, url: str) -> None:
        self.server = server
        if server == "postgres":
            psycopg = pytest.importorskip("psycopg")
            self.conn: Any = psycopg.connect(url, autocommit=True)
        elif server == "mysql":
            pymysql = pytest.importorskip("pymysql")
            from poolkeeper._config import parse_url

            parsed = parse_url(url)
            self.conn = pymysql.connect(
                host=parsed.host,
                port=parsed.port or 3306,
                user=parsed.username,
                password=parsed.password or "",
                database=parsed.database,
                autocommit=True,
            )
        else:
            self.conn = sqlite3.connect(url.partition(":///")[2], isolation_level=None)

    def execute(self, sql: str) -> list[tuple[Any, ...]]:
        cursor = self.conn.cursor()
        try:
            cursor.execute(sql)
            return list(cursor.fetchall()) if cursor.description else []
        finally:
            cursor.close()

    def count(self, table: str) -> int:
        return int(self.execute(f"SELECT count(*) FROM {table}")[0][0])

    def kill(self, session_id: int) -> None:
        if self.server == "postgres":
            self.execute(f"SELECT pg_terminate_backend({session_id})")
        else:
            self.execute(f"KILL {session_id}")

    def close(self) -> None:
        self.conn.close()


@pytest.fixture(params=CASES, ids=[c.id for c in CASES])
def case(request: pytest.FixtureRequest) -> Case:
    c: Case = request.param
    request.node.add_marker(_SERVER_MARKS[c.server])
    import_driver(request.config, c.package)
    return c


@pytest.fixture
def base_url(case: Case, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The server URL for the case (skips, or fails with CI=true, if it is down)."""
    if case.server == "sqlite":
        return f"sqlite:///{tmp_path / 'contract.db'}"
    return str(request.getfixturevalue(f"{case.server}_url"))


@pytest.fixture
def url(case: Case, base_url: str) -> str:
    rest = base_url.partition("://")[2]
    url = f"{case.scheme}://{rest}"
    if case.query:
        url += ("&" if "?" in url else "?") + case.query
    return url


@pytest.fixture
def admin(case: Case, base_url: str) -> Iterator[Admin]:
    admin = Admin(case.server, base_url)
    yield admin
    admin.close()


@pytest.fixture
def table(admin: Admin) -> Iterator[str]:
    name = f"pk_contract_{uuid.uuid4().hex[:12]}"
    admin.execute(f"CREATE TABLE {name} (x INTEGER)")
    yield name
    admin.execute(f"DROP TABLE IF EXISTS {name}")


@pytest.fixture
def driver(case: Case, url: str) -> Any:
    if case.generic:
        connect = generic_connect(case.package, url)
        return AsyncDBAPIDriver(connect) if case.is_async else DBAPIDriver(connect)
    return driver_for_url(url, {}, is_async=case.is_async)


@pytest.fixture
async def conn(driver: Any) -> AsyncIterator[Any]:
    conn = await call(driver, "connect")
    try:
        yield conn
    finally:
        await call(driver, "close", conn)


async def session_id(case: Case, conn: Any) -> int:
    sql = (
        "SELECT pg_backend_pid()"
        if case.server == "postgres"
        else "SELECT CONNECTION_ID()"
    )
    return int((await run(conn, sql))[0][0])


async def use_until_error(conn: Any) -> None:
    """Run queries on a killed session until the driver notices."""
    for _ in range(3):  # the first read may still see buffered data
        await run(conn, "SELECT 1")


async def begin(case: Case, conn: Any) -> None:
    if case.explicit_begin:
        await run(conn, "BEGIN")


# --- the contract ---------------------------------------------------------------


async def test_connect_ping_and_idle_state(case: Case, driver: Any, conn: Any) -> None:
    assert driver.is_async is case.is_async
    assert not driver.is_broken(conn)
    assert driver.transaction_status(conn) in case.idle
    await call(driver, "ping", conn)
    # A ping never leaves a transaction open behind it.
    assert driver.transaction_status(conn) in case.idle
    assert not driver.is_broken(conn)


async def test_transaction_status_transitions(
    case: Case, driver: Any, conn: Any, table: str
) -> None:
    await begin(case, conn)
    await run(conn, f"INSERT INTO {table} VALUES (1)")
    assert driver.transaction_status(conn) in case.intrans
    with pytest.raises(Exception):  # noqa: B017, PT011 - each driver has its own error class
        await run(conn, "SELECT * FROM pk_contract_no_such_table")
    assert driver.transaction_status(conn) in case.failed
    await call(driver, "rollback", conn)
    assert driver.transaction_status(conn) in case.idle
    assert not driver.is_broken(conn)


async def test_commit_persists(
    case: Case, driver: Any, conn: Any, table: str, admin: Admin
) -> None:
    await begin(case, conn)
    await run(conn, f"INSERT INTO {table} VALUES (1)")
    await call(driver, "commit", conn)
    assert driver.transaction_status(conn) in case.idle
    assert admin.count(table) == 1


async def test_rollback_discards(
    case: Case, driver: Any, conn: Any, table: str, admin: Admin
) -> None:
    await begin(case, conn)
    await run(conn, f"INSERT INTO {table} VALUES (1)")
    await call(driver, "rollback", conn)
    assert admin.count(table) == 0
    # The connection is usable afterwards.
    assert await run(conn, "SELECT 1") == [(1,)]


async def test_broken_after_server_side_kill(
    case: Case, driver: Any, conn: Any, admin: Admin
) -> None:
    if case.server == "sqlite":
        pytest.skip("sqlite has no server session to kill")
    admin.kill(await session_id(case, conn))
    with pytest.raises(Exception):  # noqa: B017, PT011 - each driver has its own error class
        await use_until_error(conn)
    assert driver.is_broken(conn)
    with pytest.raises(Exception):  # noqa: B017, PT011
        await call(driver, "ping", conn)
    await call(driver, "close", conn)  # closing a dead connection never raises


async def test_close_is_idempotent(driver: Any) -> None:
    conn = await call(driver, "connect")
    await call(driver, "close", conn)
    assert driver.is_broken(conn)
    await call(driver, "close", conn)
    assert driver.is_broken(conn)


async def test_connection_module_maps_back_to_adapter(
    case: Case, driver: Any, conn: Any
) -> None:
    # Pools built from a callable find the same adapter from the connection;
    # an unknown connection class gets none (the generic rules apply).
    expected = None if case.generic else type(driver)
    assert ops_for_connection(conn, is_async=case.is_async) is expected


async def test_keepalive_default_applied(case: Case, conn: Any) -> None:
    if case.keepalive is None:
        # sqlite has no socket; the generic adapter uses the driver's defaults.
        assert case.server == "sqlite" or case.generic
        pytest.skip(f"{case.id}: no keepalive default to check")
    idle = case.keepalive(conn)
    if idle is None:
        pytest.skip("platform without TCP_KEEPIDLE")
    assert idle == 30


async def test_reset_session_clears_state(
    case: Case, driver: Any, conn: Any, table: str, admin: Admin
) -> None:
    assert hasattr(driver, "reset_session") is case.has_reset
    if not case.has_reset:
        pytest.skip(f"{case.id} has no reset_session (a full reset is not offered)")
    repeat = "SELECT 40 + 2"
    for _ in range(6):  # past psycopg's prepare threshold, into asyncpg's cache
        assert await run(conn, repeat) == [(42,)]
    if case.server == "postgres":
        before = await run(conn, "SHOW statement_timeout")
        await run(conn, "SET statement_timeout = '4321ms'")
        await run(conn, "CREATE TEMP TABLE pk_temp (x int)")
    else:
        before = await run(conn, "SELECT @@character_set_client, @@autocommit")
        await run(conn, "SET @pk_var = 42")
        await run(conn, "SET SESSION wait_timeout = 4321")
    await begin(case, conn)
    await run(conn, f"INSERT INTO {table} VALUES (1)")

    await call(driver, "reset_session", conn)

    assert admin.count(table) == 0  # the open transaction was rolled back
    assert not driver.is_broken(conn)
    if case.server == "postgres":
        assert await run(conn, "SHOW statement_timeout") == before
        rows = await run(
            conn,
            "SELECT count(*) FROM pg_class WHERE relname = 'pk_temp' AND relpersistence = 't'",
        )
        assert rows == [(0,)]
    else:
        assert await run(conn, "SELECT @pk_var") == [(None,)]
        global_wait = await run(conn, "SELECT @@GLOBAL.wait_timeout")
        assert await run(conn, "SELECT @@SESSION.wait_timeout") == global_wait
        # The driver's own session setup (charset, autocommit) is restored.
        assert await run(conn, "SELECT @@character_set_client, @@autocommit") == before
    for _ in range(6):  # cached/prepared statements still work
        assert await run(conn, repeat) == [(42,)]
    assert driver.transaction_status(conn) in case.idle | case.intrans


#: Adapters that can tell whether a command is in progress (query_timeout).
_TELLS_BUSY = frozenset({"psycopg", "psycopg-async", "psycopg2", "aiopg"})


async def test_query_watch_at_rest_and_abort(
    case: Case, driver: Any, conn: Any
) -> None:
    """busy/quiet/abort, the optional capabilities behind ``query_timeout``."""
    watch = query_watch(driver)
    if case.server == "sqlite" or case.generic:
        assert watch is None  # cannot abort: query_timeout is a ConfigError
        return
    assert watch is not None
    busy, quiet, abort = watch
    await run(conn, "SELECT 1")
    # At rest no command is in progress (or the adapter cannot tell).
    assert busy(conn) is (False if case.id in _TELLS_BUSY else None)
    await anyio.sleep(0.3)
    silent = quiet(conn)
    assert silent is not None and 0.25 <= silent < 5.0  # TCP on Linux
    await run(conn, "SELECT 1")
    silent = quiet(conn)
    assert silent is not None and silent < 0.25
    # Abort: the connection fails at once and reports itself broken.
    abort(conn)
    with pytest.raises(Exception):  # noqa: B017, PT011 - each driver's own error
        await run(conn, "SELECT 1")
    assert driver.is_broken(conn)
    assert busy(conn) in (False, None)


async def test_ping_raises_on_closed_connection(driver: Any) -> None:
    conn = await call(driver, "connect")
    await call(driver, "close", conn)
    with pytest.raises(Exception):  # noqa: B017, PT011 - each driver has its own error class
        await call(driver, "ping", conn)


def test_mysqldb_reset_needs_credentials() -> None:
    pytest.importorskip("MySQLdb")
    from poolkeeper.drivers.mysqldb import MysqldbDriver

    driver = MysqldbDriver(lambda: None)  # built from a callable: no credentials
    with pytest.raises(NotImplementedError, match="credentials"):
        driver.reset_session(object())


async def test_through_the_pool_commit_on_exit(
    case: Case, url: str, table: str, admin: Admin
) -> None:
    import poolkeeper

    connect: Any = generic_connect(case.package, url) if case.generic else url
    if case.is_async:
        async with (
            poolkeeper.AsyncPool(connect, min_size=1, max_size=2) as apool,
            apool.connection() as conn,
        ):
            await begin(case, conn)
            await run(conn, f"INSERT INTO {table} VALUES (1)")
    else:
        with (
            poolkeeper.Pool(connect, min_size=1, max_size=2) as pool,
            pool.connection() as conn,
        ):
            await begin(case, conn)
            await run(conn, f"INSERT INTO {table} VALUES (1)")
    assert admin.count(table) == 1
