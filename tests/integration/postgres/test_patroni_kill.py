"""``kill -9`` of the Patroni leader's postmaster while pools write (3 members).

A :class:`poolkeeper.Cluster`/``AsyncCluster`` following Patroni and a plain
``Pool``/``AsyncPool`` on the multi-host URL with
``target_session_attrs=read-write`` write side by side while the leader's
postmaster is killed. This module has its own cluster (the switchover tests
in ``test_patroni.py`` leave theirs with moved leaders); Patroni and etcd come
from Debian's packages, and without them these tests skip, except with
``CI=true`` or ``--require-db``, where that is a failure.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import poolkeeper
from tests.conftest import import_driver
from tests.integration.postgres.test_patroni import aexecute, execute
from tests.support.patroni import PatroniCluster, PatroniMember, patroni_cluster

pytestmark = [pytest.mark.patroni, pytest.mark.slow, pytest.mark.anyio]


@pytest.fixture(scope="module")
def pc(pytestconfig: pytest.Config) -> Iterator[PatroniCluster]:
    with patroni_cluster(pytestconfig) as started:
        yield started


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

    def failed_since(self, since: float) -> list[BaseException]:
        return [
            e for started, _, e in self.entries if e is not None and started >= since
        ]


def kill_leader(
    pc: PatroniCluster, how: str
) -> tuple[float, PatroniMember, PatroniMember]:
    """``kill -9`` the leader's postmaster; return (t_w, old leader, new leader).

    ``how`` is ``"restart"`` (Patroni's default: the same member restarts its
    server and stays leader) or ``"failover"`` (``primary_start_timeout=0``:
    another member is promoted, the old one rejoins as a replica). t_w is
    when the leader Patroni names afterwards first accepts a write, polled
    directly on that member.
    """
    old = pc.leader()
    assert old is not None
    pc.kill_postmaster(old)
    killed_at = time.monotonic()
    new = pc.wait_writable_leader(timeout=30)
    t_w = time.monotonic()
    print(f"\n{how}: kill -9 {old.name} -> {new.name} writable {t_w - killed_at:.2f} s")
    if how == "failover":
        assert new.name != old.name, f"{old.name} restarted in place"
    return t_w, old, new


def set_kill_mode(pc: PatroniCluster, how: str) -> None:
    """Make Patroni restart a crashed leader in place, or fail over at once."""
    timeout = 0 if how == "failover" else 300  # 300: Patroni's default
    if getattr(pc, "primary_start_timeout", 300) != timeout:
        pc.patch_config(primary_start_timeout=timeout)
        pc.primary_start_timeout = timeout  # type: ignore[attr-defined]
        time.sleep(3.0)  # every member reads it at its next loop (loop_wait 2 s)


def closed_reasons(stats: Any) -> dict[str, int]:
    return {k: v for k, v in stats.closed_by_reason.items() if v}


def check_after_kill(
    logs: list[Log], t_w: float, reasons: dict[str, dict[str, int]], how: str
) -> None:
    """Writes back within WRITES_BACK_WITHIN of t_w, no failure after t_w + REFRESH.

    Checks both the plain pool and the cluster object, after a restart in
    place and after a failover alike.
    """
    problems: dict[str, str] = {}
    for log in sorted(logs, key=lambda log: log.name != "pool"):
        late = log.failed_since(t_w + REFRESH)
        ends = [e for _, e, x in log.entries if x is None and e >= t_w]
        back = ends[0] - t_w if ends else float("inf")
        retired = reasons[log.name]
        print(
            f"{how} {log.name}: writes back {back:.2f} s after t_w; "
            f"{len(log.failed_since(0))} failed checkouts, {len(late)} after "
            f"t_w+{REFRESH}; old primary's pool closed {retired}"
        )
        if back > WRITES_BACK_WITHIN or late:
            problems[log.name] = f"back after {back:.2f} s; late failures {late[:3]}"
        assert retired.get("broken", 0) + retired.get("role_changed", 0) >= 1, (
            log.name,
            retired,
        )
    assert not problems, problems


def kill_url(pc: PatroniCluster, driver: str) -> str:
    return pc.url(driver) + "?target_session_attrs=read-write&connect_timeout=2"


@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_sync_pools_write_again_after_leader_kill(
    pytestconfig: pytest.Config, pc: PatroniCluster, driver: str
) -> None:
    """Patroni restarts the killed leader's server in place."""
    run_sync_kill(pytestconfig, pc, driver, "restart")


def run_sync_kill(
    pytestconfig: pytest.Config, pc: PatroniCluster, driver: str, how: str
) -> None:
    import_driver(pytestconfig, driver)
    pc.wait_ready()
    set_kill_mode(pc, how)
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
            t_w, old, _ = kill_leader(pc, how)
            time.sleep(TAIL)
        finally:
            stop.set()
            for thread in threads:
                thread.join(10)
        reasons = {"pool": closed_reasons(pool.stats()), "cluster": {}}
        for member in cluster.stats().members:
            if member.port == old.port:
                reasons["cluster"] = closed_reasons(member.pool)
    check_after_kill(list(logs.values()), t_w, reasons, how)


@pytest.mark.parametrize("driver", ["psycopg", "asyncpg", "aiopg"])
async def test_async_pools_write_again_after_leader_kill(
    pytestconfig: pytest.Config, pc: PatroniCluster, driver: str
) -> None:
    """Patroni restarts the killed leader's server in place."""
    import asyncio

    how = "restart"
    import_driver(pytestconfig, driver)
    await asyncio.to_thread(pc.wait_ready)
    await asyncio.to_thread(set_kill_mode, pc, how)
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
            t_w, old, _ = await asyncio.to_thread(kill_leader, pc, how)
            await asyncio.sleep(TAIL)
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks), 10)
        reasons = {"pool": closed_reasons(pool.stats()), "cluster": {}}
        for member in cluster.stats().members:
            if member.port == old.port:
                reasons["cluster"] = closed_reasons(member.pool)
    check_after_kill(list(logs.values()), t_w, reasons, how)


def test_sync_pools_write_again_after_leader_failover(
    pytestconfig: pytest.Config, pc: PatroniCluster
) -> None:
    """``primary_start_timeout=0``: another member is promoted at once.

    Last in the module: the killed member rejoins as a replica, but a second
    such failover in a row has left a member unable to start (Patroni 3.0.2:
    "failed to start postgres"), so the cluster is not reused after it.
    """
    run_sync_kill(pytestconfig, pc, "psycopg", "failover")
