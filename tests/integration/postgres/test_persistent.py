"""The persistent strategy: one lasting connection per thread or task."""

from __future__ import annotations

import asyncio
import gc
import threading
from typing import Any

import psycopg
import pytest

import poolkeeper
from tests.integration.postgres.conftest import backends, terminate
from tests.support.waiting import settle


def test_each_thread_keeps_its_own_connection(
    postgres_url: str, app_name: str, admin: Any
) -> None:
    args = {"application_name": app_name}
    with poolkeeper.PersistentPool(
        postgres_url, min_size=0, max_size=4, connect_args=args
    ) as pool:
        seen: dict[str, set[int]] = {}
        together = threading.Barrier(4)

        def worker(name: str) -> None:
            together.wait()  # all four alive at once
            pids = set()
            for _ in range(20):
                with pool.connection() as conn:
                    pids.add(conn.info.backend_pid)
                    with pool.connection() as inner:  # re-entrant: same connection
                        assert inner is conn
            seen[name] = pids
            together.wait()

        threads = [threading.Thread(target=worker, args=(f"t{i}",)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(len(p) == 1 for p in seen.values())  # one connection per thread
        assert len(set().union(*seen.values())) == 4  # and a different one each
        del threads
        gc.collect()
        # Finished threads gave their connections back to the inner pool.
        assert settle(lambda: pool.stats().in_use == 0)
        assert pool.stats().idle == 4 == backends(admin, app_name)


def test_commit_at_block_end_and_broken_pin_is_replaced(
    postgres_url: str, app_name: str, admin: Any
) -> None:
    args = {"application_name": app_name}
    with poolkeeper.PersistentPool(
        postgres_url, min_size=0, max_size=2, connect_args=args
    ) as pool:
        with pool.connection() as conn:
            conn.execute("CREATE TEMP TABLE t (x int)")
            conn.execute("INSERT INTO t VALUES (1)")
        first_pid = conn.info.backend_pid
        with pool.connection() as conn:  # same session: the temp table is there
            assert conn.execute("SELECT count(*) FROM t").fetchone() == (1,)
        terminate(admin, app_name)
        with pytest.raises(psycopg.OperationalError), pool.connection() as conn:
            conn.execute("SELECT 1")  # not pinged yet: the caller sees the kill once
        with pool.connection() as conn:  # the broken pin was replaced
            assert conn.execute("SELECT 1").fetchone() == (1,)
            assert conn.info.backend_pid != first_pid
        pool.release(conn)
        assert pool.stats().in_use == 0


def test_each_task_keeps_its_own_connection(
    postgres_url: str, app_name: str, admin: Any
) -> None:
    url = postgres_url.replace("postgresql://", "postgresql+asyncpg://", 1)
    args = {"server_settings": {"application_name": app_name}}

    async def main() -> None:
        async with poolkeeper.AsyncPersistentPool(
            url, min_size=0, max_size=3, connect_args=args
        ) as pool:
            pinned = 0
            all_pinned = asyncio.Event()

            async def task() -> int:
                nonlocal pinned
                pids = set()
                for i in range(10):
                    async with pool.connection() as conn:
                        pids.add(await conn.fetchval("SELECT pg_backend_pid()"))
                    if i == 0:  # keep every task alive until all hold a pin
                        pinned += 1
                        if pinned == 3:
                            all_pinned.set()
                        await all_pinned.wait()
                    await asyncio.sleep(0)
                assert len(pids) == 1
                return int(pids.pop())

            pids = await asyncio.gather(*(task() for _ in range(3)))
            assert len(set(pids)) == 3
            for _ in range(50):  # done-callbacks give the connections back
                if pool.stats().in_use == 0:
                    break
                await asyncio.sleep(0.01)
            assert pool.stats().in_use == 0 and pool.stats().idle == 3

    asyncio.run(main())
    assert settle(lambda: backends(admin, app_name) == 0)
