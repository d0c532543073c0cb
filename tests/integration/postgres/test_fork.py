"""Fork safety against the real server: a child never harms the parent's sessions."""

from __future__ import annotations

import os
import threading
from typing import Any

import pytest

import poolkeeper
from tests.integration.postgres.conftest import backends, settle

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
