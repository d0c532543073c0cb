"""The pool contract against the real PostgreSQL server (psycopg 3 and asyncpg)."""

from __future__ import annotations

import asyncio
import logging
import random
import signal
import threading
import time
from typing import Any

import psycopg
import pytest

import poolkeeper
from tests.integration.postgres.conftest import backends, terminate
from tests.support.waiting import settle


def test_commit_and_rollback_semantics(postgres_url: str, app_name: str) -> None:
    table = f"pk_{app_name.replace('-', '_')}"
    with poolkeeper.Pool(
        postgres_url,
        min_size=1,
        max_size=2,
        connect_args={"application_name": app_name},
    ) as pool:
        with pool.connection() as conn:
            conn.execute(f"CREATE TABLE {table} (x int)")
        with pool.connection() as conn:
            conn.execute(f"INSERT INTO {table} VALUES (1)")
        try:
            with pool.connection() as conn:
                conn.execute(f"INSERT INTO {table} VALUES (2)")
                1 / 0  # noqa: B018 - the error rolls the insert back
        except ZeroDivisionError:
            pass
        else:
            pytest.fail("the error inside the block was swallowed")
        conn = pool.acquire()
        conn.execute(f"INSERT INTO {table} VALUES (3)")
        pool.release(conn)  # release rolls back
        with pool.connection() as conn:
            rows = conn.execute(f"SELECT x FROM {table} ORDER BY x").fetchall()
            conn.execute(f"DROP TABLE {table}")
        assert rows == [(1,)]


def test_100_threads_share_5_connections(
    postgres_url: str, app_name: str, admin: Any
) -> None:
    peak = 0
    stop = threading.Event()

    def monitor() -> None:
        nonlocal peak
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            while not stop.is_set():
                peak = max(peak, backends(conn, app_name))
                time.sleep(0.005)

    done = []
    pool = poolkeeper.Pool(
        postgres_url,
        min_size=1,
        max_size=5,
        timeout=60,
        connect_args={"application_name": app_name},
    )

    def worker() -> None:
        for _ in range(20):
            with pool.connection() as conn:
                conn.execute("SELECT pg_sleep(0.0005)").fetchall()
        done.append(1)

    watcher = threading.Thread(target=monitor)
    watcher.start()
    with pool:
        threads = [threading.Thread(target=worker) for _ in range(100)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        stats = pool.stats()
        assert settle(lambda: backends(admin, app_name) == pool.stats().size)
    stop.set()
    watcher.join()
    assert len(done) == 100
    assert 1 <= peak <= 5
    assert stats.acquires == 2000 and stats.max_size == 5 and stats.size <= 5
    assert settle(lambda: backends(admin, app_name) == 0)


@pytest.mark.parametrize("scheme", ["postgresql+asyncpg", "postgresql+psycopg"])
def test_1000_tasks_on_a_pool_of_10(
    postgres_url: str, app_name: str, admin: Any, scheme: str
) -> None:
    url = postgres_url.replace("postgresql://", f"{scheme}://", 1)
    args = (
        {"server_settings": {"application_name": app_name}}
        if "asyncpg" in scheme
        else {"application_name": app_name}
    )

    async def main() -> tuple[int, int]:
        async with poolkeeper.AsyncPool(
            url, min_size=2, max_size=10, timeout=60, connect_args=args
        ) as pool:

            async def task() -> int:
                async with pool.connection() as conn:
                    if "asyncpg" in scheme:
                        return int(await conn.fetchval("SELECT 1"))
                    cur = await conn.execute("SELECT 1")
                    row = await cur.fetchone()
                    return int(row[0])

            results = await asyncio.gather(*(task() for _ in range(1000)))
            # A connect the pool started for a waiter served meanwhile may still
            # be in flight: the server counts its backend before the pool does.
            deadline = time.monotonic() + 5
            while backends(admin, app_name) != pool.stats().size:
                assert time.monotonic() < deadline, "server and pool disagree"
                await asyncio.sleep(0.02)
            assert pool.stats().size <= 10
            return sum(results), pool.stats().acquires

    total, acquires = asyncio.run(main())
    assert total == 1000 and acquires == 1000
    assert settle(lambda: backends(admin, app_name) == 0)


def test_terminated_backend_is_replaced_not_reused(
    postgres_url: str, app_name: str, admin: Any
) -> None:
    with poolkeeper.Pool(
        postgres_url,
        min_size=1,
        max_size=1,
        connect_args={"application_name": app_name},
    ) as pool:
        with pool.connection() as conn:
            old_pid = conn.info.backend_pid
        assert terminate(admin, app_name) == 1
        with pytest.raises(psycopg.OperationalError), pool.connection() as conn:
            conn.execute("SELECT 1")
        assert pool.stats().closed_by_reason["broken"] == 1
        with pool.connection() as conn:
            assert conn.info.backend_pid != old_pid
            conn.execute("SELECT 1")
        assert settle(lambda: backends(admin, app_name) == pool.stats().size == 1)


def test_check_hook_hides_a_killed_backend(
    postgres_url: str, app_name: str, admin: Any
) -> None:
    def check(conn: Any) -> None:
        conn.execute("SELECT 1")

    with poolkeeper.Pool(
        postgres_url,
        min_size=2,
        max_size=2,
        check=check,
        connect_args={"application_name": app_name, "autocommit": True},
    ) as pool:
        pool.open(wait=True)
        assert terminate(admin, app_name) == 2
        for _ in range(5):
            with pool.connection() as conn:
                assert conn.execute("SELECT 42").fetchone() == (42,)
        assert pool.stats().closed_by_reason["check"] == 2
        assert settle(lambda: backends(admin, app_name) == pool.stats().size)


def test_pool_check_method_drops_dead_idle_connections(
    postgres_url: str, app_name: str, admin: Any
) -> None:
    with poolkeeper.Pool(
        postgres_url,
        min_size=3,
        max_size=3,
        connect_args={"application_name": app_name},
    ) as pool:
        pool.open(wait=True)
        terminate(admin, app_name)
        pool.check()
        assert pool.stats().closed_by_reason["check"] == 3
        pool.open(wait=True)
        with pool.connection() as conn:
            conn.execute("SELECT 1")
        assert settle(lambda: backends(admin, app_name) == pool.stats().size == 3)


def test_cancelled_waiters_leak_nothing(
    postgres_url: str, app_name: str, admin: Any
) -> None:
    url = postgres_url.replace("postgresql://", "postgresql+asyncpg://", 1)
    rng = random.Random(1234)

    async def main() -> None:
        async with poolkeeper.AsyncPool(
            url,
            min_size=1,
            max_size=4,
            connect_args={"server_settings": {"application_name": app_name}},
        ) as pool:

            async def user() -> None:
                async with pool.connection() as conn:
                    await conn.execute("SELECT pg_sleep(0.002)")

            for _ in range(20):
                tasks = [asyncio.create_task(user()) for _ in range(30)]
                await asyncio.sleep(rng.uniform(0, 0.01))
                for task in tasks[::2]:
                    task.cancel()
                results = await asyncio.gather(*tasks, return_exceptions=True)
                for result in results:
                    assert result is None or isinstance(result, asyncio.CancelledError)
            stats = pool.stats()
            assert stats.in_use == 0 and stats.waiting == 0
            await asyncio.sleep(0.1)
            assert backends(admin, app_name) == pool.stats().size
            async with pool.connection() as conn:
                assert await conn.fetchval("SELECT 1") == 1

    asyncio.run(main())
    assert settle(lambda: backends(admin, app_name) == 0)


def test_a_hand_off_to_a_cancelled_task_is_not_a_use(postgres_url: str) -> None:
    """max_uses counts the checkouts callers got, not hand-offs they missed."""
    url = postgres_url.replace("postgresql://", "postgresql+asyncpg://", 1)

    async def main() -> None:
        async with poolkeeper.AsyncPool(
            url, min_size=1, max_size=1, max_uses=2
        ) as pool:
            held = await pool.acquire()
            pid = await held.fetchval("SELECT pg_backend_pid()")
            waiter = asyncio.ensure_future(pool.acquire(timeout=10))
            while pool.stats().waiting < 1:
                await asyncio.sleep(0)
            await pool.release(held)  # handed to `waiter`...
            assert not waiter.done()
            waiter.cancel()  # ...which is cancelled before it runs
            with pytest.raises(asyncio.CancelledError):
                await waiter
            stats = pool.stats()
            assert (stats.acquires, stats.idle, stats.in_use) == (1, 1, 0)
            assert stats.closed_by_reason["uses"] == 0
            async with pool.connection() as conn:  # its second and last use
                assert conn is held
                assert await conn.fetchval("SELECT pg_backend_pid()") == pid
            stats = pool.stats()
            assert stats.acquires == 2 and stats.closed_by_reason["uses"] == 1
            assert held.is_closed()

    asyncio.run(main())


class Interrupted(BaseException):
    """An interruption of a waiting thread, like KeyboardInterrupt."""


def test_a_hand_off_to_an_interrupted_thread_is_not_a_use(postgres_url: str) -> None:
    """The thread twin: a waiter interrupted (a signal handler raising) just
    after the connection was handed to it."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers run in the main thread only")
    with poolkeeper.Pool(postgres_url, min_size=1, max_size=1, max_uses=2) as pool:
        held = pool.acquire()
        row = held.execute("SELECT pg_backend_pid()").fetchone()
        held.rollback()

        def interrupt(signum: int, frame: object) -> None:
            # Runs in this thread while it waits: hand it the connection,
            # then interrupt the wait before it takes it.
            pool.release(held)
            raise Interrupted

        def poke() -> None:
            while pool.stats().waiting < 1:
                time.sleep(0.001)
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGUSR1)

        previous = signal.signal(signal.SIGUSR1, interrupt)
        poker = threading.Thread(target=poke)
        poker.start()
        try:
            with pytest.raises(Interrupted):
                pool.acquire(timeout=10)
        finally:
            poker.join()
            signal.signal(signal.SIGUSR1, previous)
        stats = pool.stats()
        assert (stats.acquires, stats.idle, stats.in_use) == (1, 1, 0)
        assert stats.closed_by_reason["uses"] == 0
        with pool.connection() as conn:  # its second and last use
            assert conn is held
            assert conn.execute("SELECT pg_backend_pid()").fetchone() == row
        stats = pool.stats()
        assert stats.acquires == 2 and stats.closed_by_reason["uses"] == 1
        assert held.closed


def test_wrong_database_fails_with_cause(postgres_url: str) -> None:
    url = postgres_url.rsplit("/", 1)[0] + "/no_such_database_pk"
    pool = poolkeeper.Pool(url, min_size=1, timeout=1.0)
    with pytest.raises(poolkeeper.PoolTimeout) as info:
        pool.open(wait=True)
    assert isinstance(info.value.__cause__, psycopg.OperationalError)
    assert "no_such_database_pk" in str(info.value.__cause__)


@pytest.mark.parametrize("full", [False, True])
def test_full_reset_clears_session_state(postgres_url: str, full: bool) -> None:
    kwargs: dict[str, Any] = {"reset": "full"} if full else {}
    with poolkeeper.Pool(postgres_url, min_size=1, max_size=1, **kwargs) as pool:
        with pool.connection() as conn:
            conn.execute("SET application_name = 'left-behind'")
        with pool.connection() as conn:
            row = conn.execute("SHOW application_name").fetchone()
        assert (row == ("left-behind",)) is not full


def test_full_reset_needs_driver_support() -> None:
    with pytest.raises(poolkeeper.ConfigError, match="reset='full'"):
        poolkeeper.Pool("sqlite:///:memory:", reset="full")


def test_housekeeping_failure_log_masks_the_password(
    postgres_url: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Trust authentication ignores the password, so the URL connects.
    secret = "HkS3cretPassw0rd"
    url = postgres_url.replace("postgres@", f"postgres:{secret}@", 1)
    assert secret in url
    caplog.set_level(logging.DEBUG, logger="poolkeeper")
    # leak_timeout makes housekeeping run every few hundredths of a second.
    with poolkeeper.Pool(url, min_size=1, max_size=1, leak_timeout=0.1) as pool:
        failures: list[bool] = []

        def failing_housekeeping() -> None:
            failures.append(True)
            raise RuntimeError(f"could not reach {url}")

        monkeypatch.setattr(pool, "_housekeep", failing_housekeeping)
        deadline = time.monotonic() + 5.0
        while not failures and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)
    assert failures
    logged = [
        r.getMessage()
        for r in caplog.records
        if "housekeeping failed" in r.getMessage()
    ]
    assert logged and "RuntimeError: could not reach" in logged[0]
    assert all(secret not in r.getMessage() for r in caplog.records)
    assert all(secret not in (r.exc_text or "") for r in caplog.records)
