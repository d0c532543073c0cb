"""Fork safety against the real server: a child never harms the parent's sessions."""

from __future__ import annotations

import os
import threading
from typing import Any

import pytest

import poolkeeper
from tests.integration.postgres.conftest import backends
from tests.support.waiting import settle

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def _pids(pool: poolkeeper.Pool[Any], n: int) -> set[int]:
    conns = [pool.acquire() for _ in range(n)]
    pids = {c.info.backend_pid for c in conns}
    for c in conns:
        pool.release(c)
    return pids


@pytest.mark.parametrize("child_exit", ["normal", "os._exit", "close"])
def test_fork_child_leaves_parent_connections_alone(
    postgres_url: str, app_name: str, admin: Any, child_exit: str
) -> None:
    args = {"application_name": app_name}
    with poolkeeper.Pool(
        postgres_url, min_size=2, max_size=2, connect_args=args
    ) as pool:
        pool.open(wait=True)
        parent_pids = _pids(pool, 2)
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child
            code = 0
            try:
                os.close(read)
                assert pool.stats().size == 0  # started empty
                child_pids = _pids(pool, 2)
                os.write(write, ",".join(map(str, sorted(child_pids))).encode())
                if child_exit == "close":
                    pool.close()
            except BaseException:
                code = 1
            finally:
                if child_exit == "normal" and code == 0:
                    # Normal interpreter exit would run pytest's teardown in the
                    # child; sys.exit from a fork would too. Flush and exit via
                    # the finalizing path that matters: garbage collection.
                    import gc

                    gc.collect()
                os._exit(code)
        os.close(write)
        data = b""
        while chunk := os.read(read, 1024):
            data += chunk
        os.close(read)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        child_pids = {int(p) for p in data.decode().split(",")}
        assert child_pids and not child_pids & parent_pids
        # The parent's sessions are intact and still the ones it uses.
        assert _pids(pool, 2) == parent_pids
        with pool.connection() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert settle(lambda: backends(admin, app_name) == 2)


def test_fork_while_another_thread_holds_the_lock(
    postgres_url: str, app_name: str
) -> None:
    args = {"application_name": app_name}
    with poolkeeper.Pool(
        postgres_url, min_size=1, max_size=2, connect_args=args
    ) as pool:
        pool.open(wait=True)
        stop = threading.Event()

        def churn() -> None:
            while not stop.is_set():
                with pool.connection():
                    pass

        worker = threading.Thread(target=churn)
        worker.start()
        try:
            for _ in range(5):
                pid = os.fork()
                if pid == 0:
                    code = 1
                    try:
                        with pool.connection(timeout=5) as conn:
                            conn.execute("SELECT 1")
                        code = 0
                    finally:
                        os._exit(code)
                _, status = os.waitpid(pid, 0)
                assert os.waitstatus_to_exitcode(status) == 0
        finally:
            stop.set()
            worker.join()


def test_fork_under_load_leaves_the_parent_unharmed(
    postgres_url: str, app_name: str, admin: Any
) -> None:
    """Fork ten children while four threads keep the parent's pool busy.

    Each child uses the pool (it starts empty and opens its own sessions) and
    exits a different way. The parent's threads must see no error at all, and
    the parent must still own the very same server sessions afterwards.
    """
    args = {"application_name": app_name}
    with poolkeeper.Pool(
        postgres_url, min_size=4, max_size=4, connect_args=args, timeout=5
    ) as pool:
        pool.open(wait=True)
        parent_pids = set(_backend_pids(admin, app_name))
        assert len(parent_pids) == 4
        stop = threading.Event()
        errors: list[BaseException] = []
        done = [0]

        def work() -> None:
            while not stop.is_set():
                try:
                    with pool.connection() as conn:
                        conn.execute("SELECT pg_sleep(0.001)")
                    done[0] += 1
                except BaseException as exc:  # pragma: no cover - reported below
                    errors.append(exc)

        workers = [threading.Thread(target=work) for _ in range(4)]
        for worker in workers:
            worker.start()
        try:
            for i in range(10):
                pid = os.fork()
                if pid == 0:  # the child
                    code = 1
                    try:
                        with pool.connection(timeout=5) as conn:
                            conn.execute("SELECT 1")
                        if i % 3 == 1:
                            pool.close()
                        code = 0
                    finally:
                        os._exit(code)
                _, status = os.waitpid(pid, 0)
                assert os.waitstatus_to_exitcode(status) == 0
        finally:
            stop.set()
            for worker in workers:
                worker.join()
        assert not errors, errors[:3]
        assert done[0] > 0
        stats = pool.stats()
        assert stats.connections_created == 4 and stats.connections_closed == 0
        assert settle(lambda: set(_backend_pids(admin, app_name)) == parent_pids)
        with pool.connection() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)


def _backend_pids(admin: Any, app: str) -> list[int]:
    rows = admin.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (app,)
    ).fetchall()
    return [row[0] for row in rows]
