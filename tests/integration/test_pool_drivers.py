"""The whole pool, for every driver URL, against the real servers.

Where ``test_driver_contract.py`` exercises each adapter on its own, this
suite runs :class:`poolkeeper.Pool` / :class:`poolkeeper.AsyncPool` built from
a URL of each scheme and checks what a user sees: commit on normal exit,
rollback on an exception, a connection killed server-side discarded and
replaced, 20 concurrent users served by 3 connections without the server ever
seeing a fourth session, and ``stats().size`` agreeing with the server.

The server counts only this test's sessions: PostgreSQL ones carry a unique
``application_name``; MariaDB ones use a throwaway database (visible in
``information_schema.PROCESSLIST``). sqlite has no server: the checks that
need one use the pool's own bookkeeping instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import pytest

import poolkeeper
from tests.conftest import import_driver
from tests.support.generic_dbapi import generic_connect
from tests.support.waiting import asettle

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


@dataclass(frozen=True)
class Case:
    """One driver URL scheme under test."""

    id: str
    server: str  # "postgres", "mysql" or "sqlite"
    scheme: str
    is_async: bool
    package: str
    explicit_begin: bool = False  # the driver does not open transactions itself
    generic: bool = False  # built from a callable the generic DB-API adapter handles


CASES = [
    Case("psycopg", "postgres", "postgresql+psycopg", False, "psycopg"),
    Case("psycopg-async", "postgres", "postgresql+psycopg", True, "psycopg"),
    Case("psycopg2", "postgres", "postgresql+psycopg2", False, "psycopg2"),
    Case("asyncpg", "postgres", "postgresql+asyncpg", True, "asyncpg", True),
    Case("aiopg", "postgres", "postgresql+aiopg", True, "aiopg", True),
    Case("pymysql", "mysql", "mysql+pymysql", False, "pymysql"),
    Case("aiomysql", "mysql", "mysql+aiomysql", True, "aiomysql"),
    Case("mysqldb", "mysql", "mysql+mysqldb", False, "MySQLdb"),
    Case("sqlite3", "sqlite", "sqlite", False, "sqlite3"),
    Case("aiosqlite", "sqlite", "sqlite+aiosqlite", True, "aiosqlite"),
    Case("dbapi-psycopg2", "postgres", "postgresql", False, "psycopg2", generic=True),
    Case("dbapi-pymysql", "mysql", "mysql", False, "pymysql", generic=True),
    Case("dbapi-aiomysql", "mysql", "mysql", True, "aiomysql", generic=True),
]

_MARKS = {
    "postgres": pytest.mark.postgres,
    "mysql": pytest.mark.mysql,
    "sqlite": pytest.mark.sqlite,
}


@dataclass
class Target:
    """A database for one test, with server-side views of the pool's sessions."""

    case: Case
    url: str
    table: str
    count_sql: str  # run on a pooled connection: this test's server sessions
    session_sql: str  # run on a pooled connection: its server session id
    sleep_sql: str | None
    sessions: Callable[[], int | None]  # None: no server to ask (sqlite)
    kill: Callable[[], int]  # end every session of this test server-side


@pytest.fixture(
    params=[pytest.param(c, id=c.id, marks=_MARKS[c.server]) for c in CASES]
)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    """Where the pool under test connects, per driver; cleaned up afterwards."""
    case: Case = request.param
    import_driver(request.config, case.package)
    tag = f"pk_drv_{uuid.uuid4().hex[:10]}"
    if case.server == "postgres":
        yield from _postgres_target(case, request.getfixturevalue("postgres_url"), tag)
    elif case.server == "mysql":
        yield from _mysql_target(case, request.getfixturevalue("mysql_url"), tag)
    else:
        yield _sqlite_target(case, tmp_path, tag)


def _postgres_target(case: Case, server_url: str, tag: str) -> Iterator[Target]:
    import psycopg

    parts = urlsplit(server_url)
    query = "&".join(q for q in (parts.query, f"application_name={tag}") if q)
    url = urlunsplit(parts._replace(scheme=case.scheme, query=query))
    admin_url = urlunsplit(parts._replace(scheme="postgresql"))
    with psycopg.connect(admin_url, autocommit=True) as admin:

        def sessions() -> int:
            row = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                (tag,),
            ).fetchone()
            assert row is not None
            return int(row[0])

        def kill() -> int:
            rows = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = %s",
                (tag,),
            ).fetchall()
            return len(rows)

        yield Target(
            case=case,
            url=url,
            table=tag,
            count_sql=(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE application_name = current_setting('application_name')"
            ),
            session_sql="SELECT pg_backend_pid()",
            sleep_sql="SELECT pg_sleep(0.01)",
            sessions=sessions,
            kill=kill,
        )
        admin.execute(f"DROP TABLE IF EXISTS {tag}")


def _mysql_target(case: Case, server_url: str, tag: str) -> Iterator[Target]:
    import pymysql

    parts = urlsplit(server_url)
    admin = pymysql.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=unquote(parts.username or "root"),
        password=unquote(parts.password or ""),
        autocommit=True,
    )
    url = urlunsplit(parts._replace(scheme=case.scheme, path=f"/{tag}"))

    def query(sql: str, *args: Any) -> list[Any]:
        with admin.cursor() as cur:
            cur.execute(sql, args or None)
            return list(cur.fetchall())

    def sessions() -> int:
        sql = "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = %s"
        return int(query(sql, tag)[0][0])

    def kill() -> int:
        ids = query("SELECT ID FROM information_schema.PROCESSLIST WHERE DB = %s", tag)
        for (session_id,) in ids:
            with contextlib.suppress(pymysql.err.OperationalError):  # already gone
                query(f"KILL {int(session_id)}")
        return len(ids)

    query(f"CREATE DATABASE {tag}")
    try:
        yield Target(
            case=case,
            url=url,
            table="t",
            count_sql=(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                "WHERE DB = DATABASE()"
            ),
            session_sql="SELECT CONNECTION_ID()",
            sleep_sql="SELECT SLEEP(0.01)",
            sessions=sessions,
            kill=kill,
        )
    finally:
        query(f"DROP DATABASE IF EXISTS {tag}")
        admin.close()


def _sqlite_target(case: Case, tmp_path: Path, tag: str) -> Target:
    def no_kill() -> int:
        raise AssertionError("sqlite has no server sessions to kill")

    return Target(
        case=case,
        url=f"{case.scheme}:///{tmp_path / (tag + '.sqlite')}",
        table="t",
        count_sql="SELECT 1",
        session_sql="SELECT 1",
        sleep_sql=None,
        sessions=lambda: None,
        kill=no_kill,
    )


# -- driver-neutral helpers ----------------------------------------------------


def _make_pool(target: Target, **kwargs: Any) -> Any:
    cls = poolkeeper.AsyncPool if target.case.is_async else poolkeeper.Pool
    if target.case.generic:
        return cls(generic_connect(target.case.package, target.url), **kwargs)
    return cls(target.url, **kwargs)


async def _close(pool: Any) -> None:
    if isinstance(pool, poolkeeper.AsyncPool):
        await pool.close()
    else:
        pool.close()


@contextlib.asynccontextmanager
async def _connection(pool: Any) -> AsyncIterator[Any]:
    """``pool.connection()`` for either kind of pool."""
    if isinstance(pool, poolkeeper.AsyncPool):
        async with pool.connection() as conn:
            yield conn
    else:
        with pool.connection() as conn:
            yield conn


def _rows_sync(conn: Any, sql: str) -> list[tuple[Any, ...]]:
    cur = conn.cursor()
    try:
        cur.execute(sql)
        return [tuple(r) for r in cur.fetchall()] if cur.description else []
    finally:
        cur.close()


async def _rows(case: Case, conn: Any, sql: str) -> list[tuple[Any, ...]]:
    """Run ``sql`` on a driver connection and return its rows as tuples."""
    if not case.is_async:
        return _rows_sync(conn, sql)
    if case.id == "asyncpg":
        return [tuple(r) for r in await conn.fetch(sql)]
    if case.id == "dbapi-aiomysql":  # the wrapper has no __aenter__ of its own
        cur = await conn.cursor()
        try:
            await cur.execute(sql)
            return [tuple(r) for r in await cur.fetchall()] if cur.description else []
        finally:
            await cur.close()
    if case.id in ("aiomysql", "aiopg", "psycopg-async"):
        async with conn.cursor() as cur:
            await cur.execute(sql)
            return [tuple(r) for r in await cur.fetchall()] if cur.description else []
    async with conn.execute(sql) as cur:  # aiosqlite
        return [tuple(r) for r in await cur.fetchall()]


async def _scalar(case: Case, conn: Any, sql: str) -> Any:
    rows = await _rows(case, conn, sql)
    return rows[0][0]


def _server_matches_stats(target: Target, pool: Any) -> Callable[[], bool]:
    def check() -> bool:
        server = target.sessions()
        return server is None or server == pool.stats().size

    return check


async def _kill_and_wait(target: Target) -> None:
    assert target.kill() >= 1
    # pg_terminate_backend only signals: wait until the sessions are gone.
    assert await asettle(lambda: target.sessions() == 0, within=5.0)


# -- the suite -----------------------------------------------------------------


async def test_commit_on_exit_rollback_on_exception(target: Target) -> None:
    case, table = target.case, target.table
    pool = _make_pool(target, min_size=1, max_size=2)
    try:
        async with _connection(pool) as conn:
            await _rows(case, conn, f"CREATE TABLE {table} (x integer)")

        async def insert(conn: Any, value: int) -> None:
            if case.explicit_begin:
                await _rows(case, conn, "BEGIN")
            await _rows(case, conn, f"INSERT INTO {table} VALUES ({value})")

        async with _connection(pool) as conn:
            await insert(conn, 1)

        async def insert_then_fail() -> None:
            async with _connection(pool) as conn:
                await insert(conn, 2)
                1 / 0  # noqa: B018 - the error must roll the insert back

        with pytest.raises(ZeroDivisionError):
            await insert_then_fail()
        # The explicit form: release() rolls back.
        if isinstance(pool, poolkeeper.AsyncPool):
            conn = await pool.acquire()
            await insert(conn, 3)
            await pool.release(conn)
        else:
            conn = pool.acquire()
            await insert(conn, 3)
            pool.release(conn)
        async with _connection(pool) as conn:
            rows = await _rows(case, conn, f"SELECT x FROM {table} ORDER BY x")
        assert rows == [(1,)]
        stats = pool.stats()
        assert stats.size == stats.idle + stats.in_use
        assert await asettle(_server_matches_stats(target, pool), within=5.0)
    finally:
        await _close(pool)


async def test_broken_connection_discarded_after_server_kill(target: Target) -> None:
    case = target.case
    pool = _make_pool(target, min_size=1, max_size=2)
    try:
        failure: BaseException | None = None
        try:
            async with _connection(pool) as conn:
                before = await _scalar(case, conn, target.session_sql)
                if case.server == "sqlite":
                    closed = conn.close()  # the closest sqlite has to a kill
                    if asyncio.iscoroutine(closed):
                        await closed
                else:
                    await _kill_and_wait(target)
                await _rows(case, conn, "SELECT 1")
        except Exception as exc:
            failure = exc
        # The driver's own error reaches the caller, unwrapped.
        assert failure is not None
        assert not isinstance(failure, poolkeeper.PoolError), failure
        stats = pool.stats()
        assert stats.closed_by_reason["broken"] == 1
        assert stats.in_use == 0
        async with _connection(pool) as conn:
            assert conn is not None
            after = await _scalar(case, conn, target.session_sql)
        if case.server != "sqlite":
            assert after != before
        assert await asettle(_server_matches_stats(target, pool), within=5.0)
    finally:
        await _close(pool)


async def test_idle_connections_killed_server_side_are_replaced(
    target: Target,
) -> None:
    if target.case.server == "sqlite":
        pytest.skip("sqlite has no server to end its sessions")
    case = target.case
    pool = _make_pool(target, min_size=2, max_size=2, validate="always")
    try:
        if isinstance(pool, poolkeeper.AsyncPool):
            await pool.open(wait=True)
        else:
            pool.open(wait=True)
        await _kill_and_wait(target)
        # Checkout pings, finds the dead ones and connects anew, invisibly.
        async with _connection(pool) as conn:
            assert await _scalar(case, conn, "SELECT 1") == 1
        assert pool.stats().closed_by_reason["check"] >= 1
        assert await asettle(_server_matches_stats(target, pool), within=5.0)
    finally:
        await _close(pool)


async def test_twenty_users_share_three_connections(target: Target) -> None:
    case = target.case
    pool = _make_pool(target, min_size=1, max_size=3, timeout=60)
    seen: list[int] = []  # server sessions, counted by each user
    sizes: list[int] = []  # pool.stats().size, sampled by each user
    holding = 0
    peak = 0
    lock = threading.Lock()

    def enter() -> None:
        nonlocal holding, peak
        with lock:
            holding += 1
            peak = max(peak, holding)
        sizes.append(pool.stats().size)

    def leave() -> None:
        nonlocal holding
        with lock:
            holding -= 1

    def sync_user() -> None:
        with pool.connection() as conn:
            enter()
            try:
                seen.append(int(_rows_sync(conn, target.count_sql)[0][0]))
                if target.sleep_sql:
                    _rows_sync(conn, target.sleep_sql)
                else:
                    time.sleep(0.01)
            finally:
                leave()

    async def async_user() -> None:
        async with pool.connection() as conn:
            enter()
            try:
                seen.append(int(await _scalar(case, conn, target.count_sql)))
                if target.sleep_sql:
                    await _rows(case, conn, target.sleep_sql)
                else:
                    await asyncio.sleep(0.01)
            finally:
                leave()

    try:
        if case.is_async:
            await asyncio.gather(*(async_user() for _ in range(20)))
        else:
            threads = [threading.Thread(target=sync_user) for _ in range(20)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        assert len(seen) == 20
        assert max(seen) <= 3
        assert 1 <= peak <= 3
        assert max(sizes) <= 3
        stats = pool.stats()
        assert stats.acquires == 20
        assert stats.timeouts == 0
        assert stats.size <= 3
        assert await asettle(_server_matches_stats(target, pool), within=5.0)
        server = target.sessions()
        assert server is None or server == pool.stats().size
    finally:
        await _close(pool)
    assert await asettle(lambda: target.sessions() in (0, None), within=5.0)


async def test_full_reset_clears_session_state(target: Target) -> None:
    """``reset="full"``: the next user of a connection finds a clean session."""
    case = target.case
    if case.server == "sqlite":
        with pytest.raises(poolkeeper.ConfigError, match="reset='full'"):
            _make_pool(target, reset="full")
        return
    leaked: object
    if case.server == "postgres":
        dirty, probe, leaked = (
            "SET statement_timeout = '4321ms'",
            "SHOW statement_timeout",
            "4321ms",
        )
    else:
        dirty, probe, leaked = "SET @pk_var = 42", "SELECT @pk_var", 42
    if case.generic:
        # No reset command is known for an unknown library: refused at the
        # first connect (the connect error callers get at once).
        pool = _make_pool(target, min_size=0, max_size=1, reset="full", timeout=5)
        try:
            with pytest.raises(poolkeeper.ConfigError, match="reset='full'"):
                async with _connection(pool):
                    pass
            assert pool.stats().size == 0
        finally:
            await _close(pool)
        return
    pool = _make_pool(target, min_size=1, max_size=1, reset="full")
    try:
        async with _connection(pool) as conn:
            first = await _scalar(case, conn, target.session_sql)
            await _rows(case, conn, dirty)
            assert await _scalar(case, conn, probe) == leaked
        async with _connection(pool) as conn:
            second = await _scalar(case, conn, target.session_sql)
            assert await _scalar(case, conn, probe) != leaked
        assert second == first  # the same server session, cleaned
        assert await asettle(_server_matches_stats(target, pool), within=5.0)
    finally:
        await _close(pool)


async def test_query_timeout_aborts_a_long_command(target: Target) -> None:
    """A command running past ``query_timeout`` fails with QueryTimeout at once.

    The server is alive here (the frozen-server scenario is in
    tests/integration/faults/test_query_timeout.py): this checks each
    adapter's abort, on a plain long sleep.
    """
    case = target.case
    if case.generic:
        pytest.skip("the generic DB-API adapter cannot abort a command")
    if case.server == "sqlite":
        with pytest.raises(poolkeeper.ConfigError, match="query_timeout"):
            _make_pool(target, query_timeout=0.5)
        return
    pool = _make_pool(target, min_size=1, max_size=1, query_timeout=0.5)
    sleep = "SELECT pg_sleep(2)" if case.server == "postgres" else "SELECT SLEEP(2)"
    try:
        async with _connection(pool) as conn:
            first = await _scalar(case, conn, target.session_sql)
        started = time.monotonic()
        with pytest.raises(poolkeeper.QueryTimeout) as raised:
            async with _connection(pool) as conn:
                await _rows(case, conn, sleep)
        took = time.monotonic() - started
        assert 0.45 <= took <= 1.0, took
        assert isinstance(raised.value.__cause__, Exception)
        stats = pool.stats()
        assert stats.query_timeouts == 1 and stats.in_use == 0
        assert stats.closed_by_reason["query_timeout"] == 1
        async with _connection(pool) as conn:
            assert await _scalar(case, conn, target.session_sql) != first
        assert await asettle(_server_matches_stats(target, pool), within=5.0)
    finally:
        await _close(pool)


class _Interrupt(BaseException):
    """What a listener may raise past the event bus (like KeyboardInterrupt)."""


async def test_a_checkin_listener_raising_base_exception_strands_nothing(
    target: Target,
) -> None:
    """release() and a connection() block's exit give the connection back
    before raising what a checkin listener raised past the event bus: on the
    fast return (idle connection) and on the slow one (open transaction)."""
    case = target.case
    pool = _make_pool(target, min_size=1, max_size=1)

    def listener(event: object) -> None:
        raise _Interrupt

    async def release(conn: Any) -> None:
        if isinstance(pool, poolkeeper.AsyncPool):
            await pool.release(conn)
        else:
            pool.release(conn)

    async def block(in_transaction: bool) -> None:
        async with _connection(pool) as conn:
            if in_transaction:
                await _rows(case, conn, "BEGIN")

    try:
        async with _connection(pool) as conn:
            await _rows(case, conn, "SELECT 1")
        pool.on("checkin", listener)
        for in_transaction in (False, True):
            with pytest.raises(_Interrupt):
                await block(in_transaction)
            assert pool.stats().in_use == 0
            if isinstance(pool, poolkeeper.AsyncPool):
                conn = await pool.acquire(timeout=5)
            else:
                conn = pool.acquire(timeout=5)
            if in_transaction:
                await _rows(case, conn, "BEGIN")
            with pytest.raises(_Interrupt):
                await release(conn)
            assert pool.stats().in_use == 0
        pool.off("checkin", listener)
        stats = pool.stats()
        assert (stats.size, stats.idle, stats.in_use) == (1, 1, 0)
        async with _connection(pool) as conn:
            assert await _scalar(case, conn, "SELECT 1") == 1
    finally:
        await _close(pool)
