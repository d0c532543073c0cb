"""The pool with the embedded drivers: sqlite3 (threads) and aiosqlite (asyncio)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import warnings
from pathlib import Path

import pytest

import poolkeeper


def test_sqlite3_threads_commit_and_rollback(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    with poolkeeper.Pool(
        url, min_size=1, max_size=4, connect_args={"timeout": 10}
    ) as pool:
        with pool.connection() as conn:
            conn.execute("CREATE TABLE t (x INTEGER)")

        def worker(i: int) -> None:
            for j in range(25):
                with pool.connection() as conn:
                    conn.execute("INSERT INTO t VALUES (?)", (i * 100 + j,))

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        def failing_transaction() -> None:
            with pool.connection() as conn:
                conn.execute("INSERT INTO t VALUES (-1)")
                conn.execute("CREATE TABLE u (x INTEGER NOT NULL)")
                conn.execute("INSERT INTO u VALUES (NULL)")

        with pytest.raises(sqlite3.IntegrityError):
            failing_transaction()
        with pool.connection() as conn:
            (count,) = conn.execute("SELECT count(*) FROM t").fetchone()
        assert count == 200  # the -1 insert was rolled back
        stats = pool.stats()
        assert stats.acquires == 203 and stats.size <= 4 and stats.in_use == 0


def test_sqlite3_memory_database_per_connection() -> None:
    with poolkeeper.Pool("sqlite:///:memory:", min_size=1, max_size=1) as pool:
        with pool.connection() as conn:
            conn.execute("CREATE TABLE t (x)")
        with pool.connection() as conn:  # the same single connection
            assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)


def test_callable_connect_uses_the_sqlite3_adapter(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(path, check_same_thread=False)

    with poolkeeper.Pool(connect, min_size=1, max_size=2) as pool:
        conn = pool.acquire()
        conn.execute("CREATE TABLE t (x)")
        conn.execute("INSERT INTO t VALUES (1)")
        assert conn.in_transaction
        pool.release(conn)  # rolled back: the sqlite3 adapter sees the transaction
        with pool.connection() as conn:
            assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)


def test_aiosqlite_tasks(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'a.sqlite'}"

    async def main() -> int:
        async with poolkeeper.AsyncPool(url, min_size=1, max_size=3) as pool:
            async with pool.connection() as conn:
                await conn.execute("CREATE TABLE t (x INTEGER)")

            async def insert(i: int) -> None:
                async with pool.connection() as conn:
                    await conn.execute("INSERT INTO t VALUES (?)", (i,))

            await asyncio.gather(*(insert(i) for i in range(50)))
            async with pool.connection() as conn:
                cursor = await conn.execute("SELECT count(*) FROM t")
                row = await cursor.fetchone()
                assert row is not None
                return int(row[0])

    assert asyncio.run(main()) == 50


class _SubclassedConnection(sqlite3.Connection):
    """What the warning below suggests: ``sqlite3.connect(factory=...)``."""


@pytest.mark.parametrize("factory", [None, _SubclassedConnection])
def test_with_acquire_on_a_callable_connection(
    tmp_path: Path, factory: type[sqlite3.Connection] | None
) -> None:
    path = str(tmp_path / "db.sqlite")

    def connect() -> sqlite3.Connection:
        if factory is None:
            return sqlite3.connect(path, check_same_thread=False)
        return sqlite3.connect(path, check_same_thread=False, factory=factory)

    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        pool = poolkeeper.Pool(connect, min_size=2, max_size=2, timeout=0.5)
        with pool:
            pool.open(wait=True, timeout=5.0)
            for _ in range(3):
                if factory is None:
                    conn = pool.acquire()  # the with block would keep the slot
                    conn.execute("SELECT 1")
                    pool.release(conn)
                    continue
                # The subclass gets the pool's with block, which gives it back.
                with pool.acquire() as conn:
                    conn.execute("SELECT 1")
            assert pool.stats().in_use == 0
    said = [str(w.message) for w in record if w.category is poolkeeper.PoolWarning]
    if factory is None:
        # A bare sqlite3.Connection (a C type) keeps sqlite3's own with block:
        # said once, at the first connect, however many connects.
        assert len(said) == 1, said
        assert "sqlite3.Connection" in said[0]
        assert "'with pool.acquire() as conn:'" in said[0]
        assert "factory=" in said[0]
    else:
        assert said == []
