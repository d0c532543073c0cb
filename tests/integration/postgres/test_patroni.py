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
    """A running replica to switch over to."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        view = pc.cluster_view()
        replicas = [
            m["name"]
            for m in view
            if m.get("role") == "replica" and m.get("state") == "running"
        ]
        if replicas and any(m.get("role") == "leader" for m in view):
            return pc.member(replicas[0])
        time.sleep(0.2)
    raise AssertionError(f"no running replica to switch over to: {pc.cluster_view()}")


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
        async with cluster.connection(readonly=True) as conn:
            assert host_of(conn).role == "standby"


async def asyncio_to_thread(func: object, *args: object) -> None:
    import asyncio

    await asyncio.to_thread(func, *args)  # type: ignore[arg-type]


async def asyncio_sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


# ------------------------------------------------------------ kill -9 of the leader

#: Seconds after the new leader accepts writes (t_w) by which a write through
#: each pool must have succeeded: measured well under 1 s, generous for CI.
WRITES_BACK_WITHIN = 3.0
#: The cluster object's refresh interval in the kill tests.
REFRESH = 0.2
#: How long the writers keep going after t_w, to catch late failures.
TAIL = 2.0


class Log:
    """Every checkout a writer started: start, end, and the error if it failed."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.entries: list[tuple[float, float, BaseException | None]] = []

    def add(self, started: float, error: BaseException | None) -> None:
        self.entries.append((started, time.monotonic(), error))

    def back_after(self, t_w: float) -> float:
        """Seconds from t_w to the end of the first write that succeeded after it."""
        ends = [end for _, end, error in self.entries if error is None and end >= t_w]
        assert ends, f"{self.name}: no write succeeded after t_w: {self.failures()}"
        return ends[0] - t_w

    def failed_since(self, since: float) -> list[BaseException]:
        return [e for started, _, e in self.entries if e is not None and started >= since]

    def failures(self) -> list[str]:
        return [repr(e) for _, _, e in self.entries if e is not None][-5:]


def kill_leader(pc: PatroniCluster) -> tuple[float, PatroniMember, PatroniMember]:
    """``kill -9`` the leader's postmaster; return (t_w, old leader, new leader).

    t_w is when the leader Patroni names afterwards first accepts a write,
    polled directly on that member (Patroni restarts the killed server, so the
    new leader may be the same member).
    """
    old = pc.leader()
    assert old is not None
    pc.kill_postmaster(old)
    killed_at = time.monotonic()
    new = pc.wait_writable_leader(timeout=30)
    t_w = time.monotonic()
    print(f"kill -9 {old.name} -> {new.name} writable after {t_w - killed_at:.2f} s")
    return t_w, old, new


def closed_reasons(stats: Any) -> dict[str, int]:
    return {k: v for k, v in stats.closed_by_reason.items() if v}


def check_after_kill(
    logs: list[Log], t_w: float, reasons: dict[str, dict[str, int]]
) -> None:
    for log in logs:
        back = log.back_after(t_w)
        late = log.failed_since(t_w + REFRESH)
        print(f"{log.name}: writes back {back:.2f} s after t_w; "
              f"{len(log.failed_since(0))} failed checkouts; closed {reasons[log.name]}")
        assert back <= WRITES_BACK_WITHIN, (log.name, back)
        assert not late, (log.name, late)
        retired = reasons[log.name]
        assert retired.get("broken", 0) + retired.get("role_changed", 0) >= 1, (
            log.name,
            retired,
        )


def kill_url(pc: PatroniCluster, driver: str) -> str:
    return pc.url(driver) + "?target_session_attrs=read-write&connect_timeout=2"


@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_sync_pools_write_again_after_leader_kill(
    pytestconfig: pytest.Config, pc: PatroniCluster, driver: str
) -> None:
    import_driver(pytestconfig, driver)
    pc.wait_ready()
    with (
        poolkeeper.Cluster(
            pc.url(driver), patroni=pc.api_urls, refresh_interval=REFRESH, min_size=2
        ) as cluster,
        poolkeeper.Pool(kill_url(pc, driver), min_size=2, max_size=4) as pool,
    ):
        for source in (cluster, pool):
            with source.connection() as conn:
                execute(conn, "CREATE TABLE IF NOT EXISTS k9 (n int)")
        stop = threading.Event()
        logs = {"cluster": Log("cluster"), "pool": Log("pool")}

        def writer(source: Any, log: Log) -> None:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    with source.connection(timeout=2) as conn:
                        execute(conn, "INSERT INTO k9 VALUES (1)")
                        conn.commit()
                except Exception as exc:
                    log.add(started, exc)
                    time.sleep(0.02)
                else:
                    log.add(started, None)
                    time.sleep(0.01)

        threads = [
            threading.Thread(target=writer, args=(cluster, logs["cluster"])),
            threading.Thread(target=writer, args=(pool, logs["pool"])),
        ]
        for thread in threads:
            thread.start()
        try:
            time.sleep(0.3)
            t_w, _, _ = kill_leader(pc)
            time.sleep(TAIL)
        finally:
            stop.set()
            for thread in threads:
                thread.join(10)
        reasons = {"pool": closed_reasons(pool.stats()), "cluster": {}}
        for member in cluster.stats().members:
            for k, v in closed_reasons(member.pool).items():
                reasons["cluster"][k] = reasons["cluster"].get(k, 0) + v
    check_after_kill(list(logs.values()), t_w, reasons)


@pytest.mark.parametrize("driver", ["psycopg", "asyncpg", "aiopg"])
async def test_async_pools_write_again_after_leader_kill(
    pytestconfig: pytest.Config, pc: PatroniCluster, driver: str
) -> None:
    import asyncio

    import_driver(pytestconfig, driver)
    await asyncio.to_thread(pc.wait_ready)
    async with (
        poolkeeper.AsyncCluster(
            pc.url(driver), patroni=pc.api_urls, refresh_interval=REFRESH, min_size=2
        ) as cluster,
        poolkeeper.AsyncPool(kill_url(pc, driver), min_size=2, max_size=4) as pool,
    ):
        for source in (cluster, pool):
            async with source.connection() as conn:
                await aexecute(conn, "CREATE TABLE IF NOT EXISTS k9 (n int)")
        stop = asyncio.Event()
        logs = {"cluster": Log("cluster"), "pool": Log("pool")}

        async def writer(source: Any, log: Log) -> None:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    async with source.connection(timeout=2) as conn:
                        await aexecute(conn, "INSERT INTO k9 VALUES (1)")
                        if driver == "psycopg":
                            await conn.commit()
                except Exception as exc:
                    log.add(started, exc)
                    await asyncio.sleep(0.02)
                else:
                    log.add(started, None)
                    await asyncio.sleep(0.01)

        tasks = [
            asyncio.create_task(writer(cluster, logs["cluster"])),
            asyncio.create_task(writer(pool, logs["pool"])),
        ]
        try:
            await asyncio.sleep(0.3)
            t_w, _, _ = await asyncio.to_thread(kill_leader, pc)
            await asyncio.sleep(TAIL)
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks), 10)
        reasons = {"pool": closed_reasons(pool.stats()), "cluster": {}}
        for member in cluster.stats().members:
            for k, v in closed_reasons(member.pool).items():
                reasons["cluster"][k] = reasons["cluster"].get(k, 0) + v
    check_after_kill(list(logs.values()), t_w, reasons)
