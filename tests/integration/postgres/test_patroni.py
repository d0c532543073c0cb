"""The cluster object follows a real Patroni switchover (3 members, single-node etcd).

Patroni and etcd come from Debian's packages (scripts/test installs them);
without them these tests skip, except with ``CI=true`` or ``--require-db``,
where that is a failure.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import poolkeeper
from poolkeeper.cluster import host_of
from tests.conftest import import_driver
from tests.support.patroni import PatroniCluster, PatroniMember, patroni_cluster

pytestmark = [pytest.mark.patroni, pytest.mark.slow, pytest.mark.anyio]

#: Seconds the cluster object may take to see a switchover Patroni reports.
SEEN_WITHIN = 10.0


@pytest.fixture(scope="module")
def pc(pytestconfig: pytest.Config) -> Iterator[PatroniCluster]:
    with patroni_cluster(pytestconfig) as started:
        yield started


def candidate(pc: PatroniCluster) -> PatroniMember:
    """A replica the leader streams to, caught up, to switch over to.

    Only a replica the leader itself reports streaming and replayed to its
    current position qualifies (see ``caught_up_replicas``); a member still
    rewinding after an earlier switchover is waited for, never chosen.
    """
    started = time.monotonic()
    while time.monotonic() - started < 60:
        ready = pc.caught_up_replicas()
        if ready:
            return ready[0]
        time.sleep(0.2)
    raise AssertionError(
        f"no caught-up streaming replica within 60 s: {pc.cluster_view()}\n{pc.logs()}"
    )


def wait_primary(get: object, port: int) -> float:
    started = time.monotonic()
    while time.monotonic() - started < SEEN_WITHIN:
        if get() == ("127.0.0.1", port):  # type: ignore[operator]
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"cluster still writes to {get()} (want port {port})")  # type: ignore[operator]


def execute(conn: Any, statement: str) -> None:
    cursor = conn.cursor()
    try:
        cursor.execute(statement)
    finally:
        cursor.close()


async def aexecute(conn: Any, statement: str) -> None:
    if type(conn).__module__.startswith("aiopg"):
        cursor = await conn.cursor()
        try:
            await cursor.execute(statement)
        finally:
            cursor.close()
    else:
        await conn.execute(statement)


@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_sync_cluster_moves_writes_on_switchover(
    pytestconfig: pytest.Config, pc: PatroniCluster, driver: str
) -> None:
    import_driver(pytestconfig, driver)
    leader = pc.leader()
    assert leader is not None
    with poolkeeper.Cluster(
        pc.url(driver), patroni=pc.api_urls, refresh_interval=0.2, min_size=1
    ) as cluster:
        with cluster.connection() as conn:
            assert host_of(conn).port == leader.port
            execute(conn, "CREATE TABLE IF NOT EXISTS sw (n int)")
        target = candidate(pc)
        stop = threading.Event()
        failures: list[tuple[float, BaseException]] = []

        def writer() -> None:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    with cluster.connection(timeout=5) as conn:
                        execute(conn, "INSERT INTO sw VALUES (1)")
                except Exception as exc:
                    failures.append((started, exc))
                time.sleep(0.01)

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            pc.switchover(target)
            wait_primary(lambda: cluster.primary, target.port)
            moved_at = time.monotonic()
            for _ in range(20):
                with cluster.connection() as conn:
                    execute(conn, "INSERT INTO sw VALUES (2)")
                    assert host_of(conn).port == target.port
        finally:
            stop.set()
            thread.join(10)
        # A statement that met the switchover may fail; no checkout that
        # started after the cluster saw the new leader.
        late = [exc for started, exc in failures if started >= moved_at]
        assert not late, late
        stats = cluster.stats()
        assert stats.primary_changes == 1
        assert stats.primary == ("127.0.0.1", target.port)


@pytest.mark.parametrize("driver", ["psycopg", "asyncpg", "aiopg"])
async def test_async_cluster_moves_writes_on_switchover(
    pytestconfig: pytest.Config, pc: PatroniCluster, driver: str
) -> None:
    import_driver(pytestconfig, driver)
    target = candidate(pc)
    async with poolkeeper.AsyncCluster(
        pc.url(driver), patroni=pc.api_urls, refresh_interval=0.2, min_size=1
    ) as cluster:
        async with cluster.connection() as conn:
            assert host_of(conn).port != target.port
        await asyncio_to_thread(pc.switchover, target)
        started = time.monotonic()
        while cluster.primary != ("127.0.0.1", target.port):
            assert time.monotonic() - started < SEEN_WITHIN, cluster.stats()
            await asyncio_sleep(0.05)
        for _ in range(10):
            async with cluster.connection() as conn:
                await aexecute(conn, "CREATE TABLE IF NOT EXISTS sw2 (n int)")
                assert host_of(conn).port == target.port
        # The followers may still be restarting when Patroni names the new
        # leader (writes move at once); reads move to one as soon as a
        # refresh finds it back.
        started = time.monotonic()
        while not any(
            m.healthy and m.role == "standby" for m in cluster.stats().members
        ):
            assert time.monotonic() - started < SEEN_WITHIN, cluster.stats()
            await asyncio_sleep(0.05)
        async with cluster.connection(readonly=True) as conn:
            assert host_of(conn).role == "standby"


async def asyncio_to_thread(func: object, *args: object) -> None:
    import asyncio

    await asyncio.to_thread(func, *args)  # type: ignore[arg-type]


async def asyncio_sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)
