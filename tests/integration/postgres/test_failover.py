"""Failover inside one pool, on a real primary with streaming replicas.

A pool on ``postgresql://P,R1,R2/...?target_session_attrs=read-write`` with
its connections on P goes through two failovers, every PostgreSQL driver,
sync and async:

1. **Stale primary** (what a switchover leaves behind): P turns read-only
   (``ALTER SYSTEM SET default_transaction_read_only = on`` and a reload)
   while R1 is promoted. The first write fails with the driver's own
   SQLSTATE 25006 error; every write after it succeeds, and no checkout
   hands out a connection to P again (before the pool knew hosts, every
   write failed until ``max_lifetime``).
2. **Crash**: R1, now the primary, is killed (``kill -9``) and R2 promoted.
   The write on the dead connection fails; every write after it succeeds on R2.

One primary serves the module; each test starts its own two replicas of it
(a promoted or crashed replica is of no further use) and makes the primary
writable again at the end.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import poolkeeper
from poolkeeper.cluster import host_of
from tests.conftest import import_driver
from tests.support.replication import Member, ReplicaSet, replica_set

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.timeout(90)]

WRITE = "INSERT INTO beat VALUES (1)"
#: Writes after each fault: the first may fail (the caller whose statement
#: met the fault gets the driver's error); none after it may.
WRITES = 6
#: Pool options for the error-driven tests. Validation pings read the role
#: too, so on a slow machine a connection idle past ``validate_after`` would
#: be found stale before any write fails; a long one makes the first write
#: meet the fault, as under steady load.
ERROR_DRIVEN: dict[str, Any] = {"min_size": 0, "max_size": 3, "validate_after": 60}


@pytest.fixture(scope="module")
def shared() -> Iterator[ReplicaSet]:
    with replica_set(0) as started:
        started.primary.execute("CREATE TABLE IF NOT EXISTS beat (n int)")
        yield started


@pytest.fixture
def trio(shared: ReplicaSet) -> Iterator[tuple[Member, Member, Member]]:
    """The shared primary and two fresh streaming replicas of it."""
    primary = shared.primary
    fresh = [Member(primary, max_connections=30) for _ in range(2)]
    try:
        for member in fresh:
            member.start()
        deadline = time.monotonic() + 30
        while (
            primary.query(
                "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"
            )[0]
            < 2
        ):
            assert time.monotonic() < deadline, "replicas not streaming in 30 s"
            time.sleep(0.05)
        yield primary, fresh[0], fresh[1]
    finally:
        for member in fresh:
            member.destroy()
        primary.set_guc("default_transaction_read_only", None)


def url_of(driver: str, members: tuple[Member, ...]) -> str:
    hosts = ",".join(f"127.0.0.1:{m.port}" for m in members)
    return (
        f"postgresql+{driver}://postgres@{hosts}/postgres"
        "?target_session_attrs=read-write&connect_timeout=3"
    )


def sqlstate(exc: BaseException) -> str | None:
    return getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)


def check_outcomes(
    outcomes: list[tuple[int | None, BaseException | None]],
    bad: Member,
    good: Member,
    first_sqlstate: str | None,
) -> None:
    """The first write met the fault (on ``bad``); the rest all went to ``good``.

    ``first_sqlstate`` None (a crash): the first write may also have gone
    to ``good`` already, when the checkout's validation ping found the dead
    connection first (it was idle past ``validate_after`` on a slow machine).
    """
    (port, error), rest = outcomes[0], outcomes[1:]
    if first_sqlstate is None and port == good.port and error is None:
        rest = outcomes
    else:
        assert port == bad.port
        assert error is not None, "the first write after the fault should fail"
        assert not isinstance(error, poolkeeper.PoolError), error
        if first_sqlstate is not None:
            assert sqlstate(error) == first_sqlstate, repr(error)
    failed = [(p, repr(e)) for p, e in rest if e is not None]
    assert not failed, f"writes after the first one failed: {failed}"
    assert [p for p, _ in rest] == [good.port] * len(rest)


# --- sync ----------------------------------------------------------------------


def sync_write(pool: poolkeeper.Pool[Any], driver: str) -> tuple[int | None, Any]:
    """One write: psycopg in a ``connection()`` block, psycopg2 between
    ``acquire()`` and ``release()`` (a failed write leaves its transaction
    for release() to roll back)."""
    if driver == "psycopg2":
        conn = pool.acquire(timeout=10)
        port = host_of(conn).port
        try:
            with conn.cursor() as cursor:
                cursor.execute(WRITE)
            conn.commit()
        except Exception as exc:
            return port, exc
        finally:
            pool.release(conn)
        return port, None
    port = None
    try:
        with pool.connection(timeout=10) as conn:
            port = host_of(conn).port
            conn.execute(WRITE)
    except Exception as exc:
        return port, exc
    return port, None


@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_sync_pool_fails_over_without_failing_later_callers(
    pytestconfig: pytest.Config, trio: tuple[Member, Member, Member], driver: str
) -> None:
    import_driver(pytestconfig, driver)
    primary, first, second = trio
    with poolkeeper.Pool(url_of(driver, trio), **ERROR_DRIVEN) as pool:
        warm = [pool.acquire() for _ in range(3)]
        assert {host_of(c).port for c in warm} == {primary.port}
        for conn in warm:
            pool.release(conn)

        primary.make_read_only()
        first.promote()
        stale = [sync_write(pool, driver) for _ in range(WRITES)]
        check_outcomes(stale, primary, first, "25006")
        assert pool.stats().closed_by_reason["role_changed"] == 3

        first.crash()
        second.promote()
        crashed = [sync_write(pool, driver) for _ in range(WRITES)]
        check_outcomes(crashed, first, second, None)


# --- asyncio -------------------------------------------------------------------


async def async_write(
    pool: poolkeeper.AsyncPool[Any], driver: str
) -> tuple[int | None, Any]:
    port = None
    try:
        async with pool.connection(timeout=10) as conn:
            port = host_of(conn).port
            if driver == "aiopg":
                cursor = await conn.cursor()
                try:
                    await cursor.execute(WRITE)
                finally:
                    cursor.close()
            else:
                await conn.execute(WRITE)
    except Exception as exc:
        return port, exc
    return port, None


@pytest.mark.parametrize("driver", ["psycopg", "asyncpg", "aiopg"])
async def test_async_pool_fails_over_without_failing_later_callers(
    pytestconfig: pytest.Config, trio: tuple[Member, Member, Member], driver: str
) -> None:
    import_driver(pytestconfig, driver)
    primary, first, second = trio
    async with poolkeeper.AsyncPool(url_of(driver, trio), **ERROR_DRIVEN) as pool:
        warm = [await pool.acquire() for _ in range(3)]
        assert {host_of(c).port for c in warm} == {primary.port}
        for conn in warm:
            await pool.release(conn)

        primary.make_read_only()
        first.promote()
        stale = [await async_write(pool, driver) for _ in range(WRITES)]
        check_outcomes(stale, primary, first, "25006")
        assert pool.stats().closed_by_reason["role_changed"] == 3

        first.crash()
        second.promote()
        crashed = [await async_write(pool, driver) for _ in range(WRITES)]
        check_outcomes(crashed, first, second, None)


# --- role_check_interval: a switchover seen before any write fails -------------


def wait_for_role_round(interval: float) -> None:
    # The housekeeper marks every host suspect once per interval (it runs
    # every interval / 4): after two intervals a round has surely passed.
    time.sleep(2 * interval + 0.1)


def test_sync_role_check_interval_moves_writes_before_any_fails(
    pytestconfig: pytest.Config, trio: tuple[Member, Member, Member]
) -> None:
    # acquire()/release() in autocommit: the pool never sees a statement's
    # error there, so only the periodic role check can notice the switchover.
    import_driver(pytestconfig, "psycopg2")
    primary, first, _ = trio
    url = url_of("psycopg2", trio)
    with poolkeeper.Pool(url, min_size=0, max_size=2, role_check_interval=0.2) as pool:
        warm = [pool.acquire(), pool.acquire()]
        assert {host_of(c).port for c in warm} == {primary.port}
        for conn in warm:
            pool.release(conn)
        primary.make_read_only()
        first.promote()
        wait_for_role_round(0.2)
        for _ in range(WRITES):
            conn = pool.acquire(timeout=10)
            try:
                assert host_of(conn).port == first.port
                conn.autocommit = True
                with conn.cursor() as cursor:
                    cursor.execute(WRITE)
            finally:
                pool.release(conn)
        assert pool.stats().closed_by_reason["role_changed"] >= 1


async def test_async_role_check_interval_moves_writes_before_any_fails(
    pytestconfig: pytest.Config, trio: tuple[Member, Member, Member]
) -> None:
    import_driver(pytestconfig, "asyncpg")
    primary, first, _ = trio
    url = url_of("asyncpg", trio)
    async with poolkeeper.AsyncPool(
        url, min_size=0, max_size=2, role_check_interval=0.2
    ) as pool:
        warm = [await pool.acquire(), await pool.acquire()]
        assert {host_of(c).port for c in warm} == {primary.port}
        for conn in warm:
            await pool.release(conn)
        primary.make_read_only()
        first.promote()
        await asyncio.sleep(2 * 0.2 + 0.1)  # see wait_for_role_round
        for _ in range(WRITES):
            conn = await pool.acquire(timeout=10)
            try:
                assert host_of(conn).port == first.port
                await conn.execute(WRITE)
            finally:
                await pool.release(conn)
        assert pool.stats().closed_by_reason["role_changed"] >= 1


def test_role_check_interval_is_checked_by_the_pool() -> None:
    with pytest.raises(poolkeeper.ConfigError, match="role_check_interval"):
        poolkeeper.Pool("postgresql://u@h/db", role_check_interval=-1)


def test_a_validation_ping_reads_the_role_so_no_write_fails(
    pytestconfig: pytest.Config, trio: tuple[Member, Member, Member]
) -> None:
    # Connections idle past validate_after are pinged at checkout; with a
    # role to keep, the ping is the role query: a switchover that happened
    # while they sat idle costs no caller an error.
    import_driver(pytestconfig, "psycopg")
    primary, first, _ = trio
    url = url_of("psycopg", trio)
    with poolkeeper.Pool(url, min_size=0, max_size=3, validate_after=0.1) as pool:
        warm = [pool.acquire() for _ in range(3)]
        for conn in warm:
            pool.release(conn)
        primary.make_read_only()
        first.promote()
        time.sleep(0.2)
        writes = [sync_write(pool, "psycopg") for _ in range(WRITES)]
        assert writes == [(first.port, None)] * WRITES
        assert pool.stats().closed_by_reason["role_changed"] == 3


# --- under load: 4 writers through a pool of 4 (the scenario) ----------


def test_sync_writers_under_load_fail_at_most_once_per_connection(
    pytestconfig: pytest.Config, trio: tuple[Member, Member, Member]
) -> None:
    import_driver(pytestconfig, "psycopg")
    primary, first, _ = trio
    results: list[tuple[float, int | None, BaseException | None]] = []
    stop = threading.Event()
    options = {**ERROR_DRIVEN, "max_size": 4, "timeout": 10}
    with poolkeeper.Pool(url_of("psycopg", trio), **options) as pool:

        def writer() -> None:
            while not stop.is_set():
                port, error = sync_write(pool, "psycopg")
                results.append((time.monotonic(), port, error))

        workers = [threading.Thread(target=writer) for _ in range(4)]
        for worker in workers:
            worker.start()
        try:
            time.sleep(0.2)
            first.promote()
            primary.make_read_only()
            faulted = time.monotonic()
            time.sleep(1.0)
        finally:
            stop.set()
            for worker in workers:
                worker.join(15)
    errors = [(port, e) for _, port, e in results if e is not None]
    # Each connection to the old primary fails at most once (4 writers, a
    # pool of at most 4: at most 4 such connections).
    assert len(errors) <= 4, errors
    assert all(p == primary.port and sqlstate(e) == "25006" for p, e in errors)
    later = [(p, e) for t, p, e in results if t > faulted + 0.5]
    assert later and all(e is None and p == first.port for p, e in later)


def test_a_role_change_found_by_a_keepalive_ping_suspects_its_host(
    pytestconfig: pytest.Config, trio: tuple[Member, Member, Member]
) -> None:
    """A keepalive ping (the role query) finds one connection's server no
    longer read-write: its siblings on that server, used too recently to be
    pinged at checkout, have their role read before they are lent
    (docs/CLUSTERS.md: a role that no longer fits makes its host suspect).
    Before, only the pinged connection was retired and the next write went
    to the stale primary and failed with 25006."""
    import_driver(pytestconfig, "psycopg")
    primary, first, _ = trio
    url = url_of("psycopg", trio)
    with poolkeeper.Pool(
        url, min_size=0, max_size=3, validate_after=60, keepalive=0.3
    ) as pool:
        held = [pool.acquire() for _ in range(3)]
        assert {host_of(c).port for c in held} == {primary.port}
        primary.make_read_only()
        first.promote()
        pool.release(held[0])  # idle: its keepalive ping reads the role
        deadline = time.monotonic() + 10
        while pool.stats().closed_by_reason["role_changed"] < 1:
            assert time.monotonic() < deadline, "no keepalive found the role change"
            time.sleep(0.01)
        for conn in held[1:]:  # fresh: no keepalive due before the writes
            pool.release(conn)
        writes = [sync_write(pool, "psycopg") for _ in range(3)]
        assert writes == [(first.port, None)] * 3, writes
