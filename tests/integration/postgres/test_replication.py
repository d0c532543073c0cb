"""Multi-host URLs and the cluster object against a real primary with two replicas.

One :class:`~tests.support.replication.ReplicaSet` (a primary and two streaming
replicas on free loopback ports) serves the whole module; tests that pause
replay resume it before they end.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

import poolkeeper
from poolkeeper.cluster import host_of
from tests.conftest import import_driver
from tests.support.replication import Member, ReplicaSet, replica_set

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

SYNC = ["psycopg", "psycopg2"]
ASYNC = ["psycopg", "asyncpg", "aiopg"]

#: With hosts listed as (refusing, primary, replica 1, replica 2): which one
#: each target_session_attrs value must land on.
EXPECTED = {
    "any": "primary",
    "read-write": "primary",
    "primary": "primary",
    "read-only": "replica1",
    "standby": "replica1",
    "prefer-standby": "replica1",
}


@pytest.fixture(scope="module")
def rs() -> Iterator[ReplicaSet]:
    with replica_set(2) as started:
        started.primary.execute("CREATE TABLE IF NOT EXISTS beat (n int)")
        started.wait_replayed()
        yield started


@pytest.fixture
def refusing_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def named(rs: ReplicaSet, which: str) -> Member:
    return {
        "primary": rs.primary,
        "replica1": rs.replicas[0],
        "replica2": rs.replicas[1],
    }[which]


def hosts_url(driver: str, ports: list[int], **params: Any) -> str:
    hosts = ",".join(f"127.0.0.1:{p}" for p in ports)
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"postgresql+{driver}://postgres@{hosts}/postgres?{query}"


def ordered(rs: ReplicaSet, refusing: int) -> list[int]:
    return [refusing, rs.primary.port, rs.replicas[0].port, rs.replicas[1].port]


# --- multi-host URLs ---------------------------------------------------------------


@pytest.mark.parametrize("attrs", list(EXPECTED))
@pytest.mark.parametrize("driver", SYNC)
def test_sync_target_session_attrs(
    pytestconfig: pytest.Config,
    rs: ReplicaSet,
    refusing_port: int,
    driver: str,
    attrs: str,
) -> None:
    import_driver(pytestconfig, driver)
    url = hosts_url(
        driver,
        ordered(rs, refusing_port),
        target_session_attrs=attrs,
        connect_timeout=3,
    )
    expected = named(rs, EXPECTED[attrs])
    with (
        poolkeeper.Pool(url, min_size=0, max_size=1) as pool,
        pool.connection() as conn,
    ):
        info = host_of(conn)
    assert (info.host, info.port) == ("127.0.0.1", expected.port)
    assert info.role == ("primary" if expected is rs.primary else "standby")


@pytest.mark.parametrize("attrs", list(EXPECTED))
@pytest.mark.parametrize("driver", ASYNC)
async def test_async_target_session_attrs(
    pytestconfig: pytest.Config,
    rs: ReplicaSet,
    refusing_port: int,
    driver: str,
    attrs: str,
) -> None:
    import_driver(pytestconfig, driver)
    url = hosts_url(
        driver,
        ordered(rs, refusing_port),
        target_session_attrs=attrs,
        connect_timeout=3,
    )
    expected = named(rs, EXPECTED[attrs])
    pool = poolkeeper.AsyncPool(url, min_size=0, max_size=1)
    async with pool, pool.connection() as conn:
        info = host_of(conn)
    assert (info.host, info.port) == ("127.0.0.1", expected.port)
    assert info.role == ("primary" if expected is rs.primary else "standby")


@pytest.mark.parametrize("driver", SYNC)
def test_sync_load_balance_random_spreads(
    pytestconfig: pytest.Config, rs: ReplicaSet, driver: str
) -> None:
    import_driver(pytestconfig, driver)
    ports = [m.port for m in rs.members]
    url = hosts_url(driver, ports, load_balance_hosts="random")
    with poolkeeper.Pool(url, min_size=0, max_size=12) as pool:
        conns = [pool.acquire() for _ in range(12)]
        seen = {host_of(c).port for c in conns}
        for conn in conns:
            pool.release(conn)
    assert len(seen) >= 2, f"12 connections all went to {seen}"


@pytest.mark.parametrize("driver", ASYNC)
async def test_async_load_balance_random_spreads(
    pytestconfig: pytest.Config, rs: ReplicaSet, driver: str
) -> None:
    import_driver(pytestconfig, driver)
    ports = [m.port for m in rs.members]
    url = hosts_url(driver, ports, load_balance_hosts="random")
    async with poolkeeper.AsyncPool(url, min_size=0, max_size=12) as pool:
        conns = [await pool.acquire() for _ in range(12)]
        seen = {host_of(c).port for c in conns}
        for conn in conns:
            await pool.release(conn)
    assert len(seen) >= 2, f"12 connections all went to {seen}"


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose listener accepts TCP but never answers PostgreSQL's startup."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


@pytest.mark.parametrize("driver", ASYNC)
async def test_async_connect_timeout_is_per_host(
    pytestconfig: pytest.Config, rs: ReplicaSet, silent_port: int, driver: str
) -> None:
    # aiopg drives libpq's asynchronous connect, which ignores connect_timeout;
    # asyncpg spends one timeout on every host together: a silent first host
    # must cost one connect_timeout, and the second host still gets its own.
    import_driver(pytestconfig, driver)
    url = hosts_url(
        driver,
        [silent_port, rs.primary.port],
        connect_timeout=2,
        target_session_attrs="read-write",
    )
    started = time.monotonic()
    pool = poolkeeper.AsyncPool(url, min_size=0, max_size=1, timeout=10)
    async with pool, pool.connection() as conn:
        assert host_of(conn).port == rs.primary.port
    assert time.monotonic() - started < 6


# --- the cluster object ---------------------------------------------------------------


def lagging(rs: ReplicaSet, replicas: list[Member], more_than: float) -> None:
    """Pause replay on ``replicas`` and write until their lag exceeds ``more_than``."""
    for replica in replicas:
        replica.pause_replay()
    deadline = time.monotonic() + 10
    while not all(r.replay_lag() > more_than for r in replicas):
        assert time.monotonic() < deadline, "replicas did not fall behind"
        rs.primary.execute("INSERT INTO beat VALUES (1)")
        time.sleep(0.1)


def caught_up(rs: ReplicaSet) -> None:
    for replica in rs.replicas:
        replica.resume_replay()
    rs.wait_replayed()


def cluster_url(rs: ReplicaSet, driver: str) -> str:
    return rs.url(driver)


@pytest.mark.parametrize("driver", SYNC)
def test_sync_cluster_routes_writes_reads_and_lag(
    pytestconfig: pytest.Config, rs: ReplicaSet, driver: str
) -> None:
    import_driver(pytestconfig, driver)
    replica_ports = {r.port for r in rs.replicas}
    with poolkeeper.Cluster(
        cluster_url(rs, driver), max_lag=1.0, refresh_interval=60, min_size=0
    ) as cluster:
        with cluster.connection() as conn:
            assert host_of(conn).port == rs.primary.port
        seen = set()
        for _ in range(4):
            with cluster.connection(readonly=True) as conn:
                seen.add(host_of(conn).port)
        assert seen == replica_ports
        # Holding one replica's connection makes the other one less busy.
        with (
            cluster.connection(readonly=True) as held,
            cluster.connection(readonly=True) as other,
        ):
            assert {host_of(held).port, host_of(other).port} == replica_ports
        try:
            lagging(rs, rs.replicas[:1], 1.0)
            cluster.refresh()
            for _ in range(4):
                with cluster.connection(readonly=True) as conn:
                    assert host_of(conn).port == rs.replicas[1].port
            lagging(rs, rs.replicas, 1.0)
            cluster.refresh()
            with cluster.connection(readonly=True) as conn:
                assert host_of(conn).port == rs.primary.port
            stats = cluster.stats()
            assert stats.read_fallbacks == 1
            assert stats.primary == ("127.0.0.1", rs.primary.port)
            lags = {m.port: m.lag for m in stats.members}
            assert (lags[rs.replicas[0].port] or 0) > 1.0
        finally:
            caught_up(rs)


@pytest.mark.parametrize("driver", ASYNC)
async def test_async_cluster_routes_writes_reads_and_lag(
    pytestconfig: pytest.Config, rs: ReplicaSet, driver: str
) -> None:
    import_driver(pytestconfig, driver)
    replica_ports = {r.port for r in rs.replicas}
    async with poolkeeper.AsyncCluster(
        cluster_url(rs, driver), max_lag=1.0, refresh_interval=60, min_size=0
    ) as cluster:
        async with cluster.connection() as conn:
            assert host_of(conn).port == rs.primary.port
        seen = set()
        for _ in range(4):
            async with cluster.connection(readonly=True) as conn:
                seen.add(host_of(conn).port)
        assert seen == replica_ports
        try:
            lagging(rs, rs.replicas[:1], 1.0)
            await cluster.refresh()
            for _ in range(4):
                async with cluster.connection(readonly=True) as conn:
                    assert host_of(conn).port == rs.replicas[1].port
            lagging(rs, rs.replicas, 1.0)
            await cluster.refresh()
            async with cluster.connection(readonly=True) as conn:
                assert host_of(conn).port == rs.primary.port
            assert cluster.stats().read_fallbacks == 1
        finally:
            caught_up(rs)


def test_cluster_without_fallback_refuses_reads_when_no_replica_qualifies(
    rs: ReplicaSet,
) -> None:
    with poolkeeper.Cluster(
        rs.url("psycopg"),
        max_lag=1.0,
        fallback_to_primary=False,
        refresh_interval=60,
        min_size=0,
    ) as cluster:
        try:
            lagging(rs, rs.replicas, 1.0)
            cluster.refresh()
            with (
                pytest.raises(poolkeeper.PoolError, match="no replica within max_lag"),
                cluster.connection(readonly=True),
            ):
                pass
            with cluster.connection() as conn:  # writes are unaffected
                assert host_of(conn).role == "primary"
        finally:
            caught_up(rs)


def test_replica_set_faults() -> None:
    """The fixture's own faults: read-only old primary, promote, crash."""
    with replica_set(1) as fresh:
        old, new = fresh.primary, fresh.replicas[0]
        old.make_read_only()
        new.promote()
        assert not new.is_in_recovery()
        url = fresh.url("psycopg", target_session_attrs="read-write")
        with poolkeeper.Pool(url, min_size=0) as pool, pool.connection() as conn:
            assert host_of(conn).port == new.port
        with psycopg_conn(old) as conn:
            assert host_of(conn).role == "read-only"
        new.crash()
        assert not new.is_running


def psycopg_conn(member: Member) -> Any:
    import psycopg

    return psycopg.connect(
        host="127.0.0.1", port=member.port, user="postgres", dbname="postgres"
    )


def test_sqlalchemy_primary_and_replica_engines(
    pytestconfig: pytest.Config, rs: ReplicaSet
) -> None:
    """The docs/CLUSTERS.md recipe: two engines with poolkeeper's pool class."""
    sqlalchemy = import_driver(pytestconfig, "sqlalchemy")
    from poolkeeper.sqlalchemy import Pool

    hosts = "&".join(f"host=127.0.0.1:{m.port}" for m in rs.members)
    base = f"postgresql+psycopg://postgres@/postgres?{hosts}"
    writer = sqlalchemy.create_engine(
        f"{base}&target_session_attrs=read-write", poolclass=Pool
    )
    reader = sqlalchemy.create_engine(
        f"{base}&target_session_attrs=prefer-standby&load_balance_hosts=random",
        poolclass=Pool,
    )
    query = sqlalchemy.text("SELECT inet_server_port(), pg_is_in_recovery()")
    try:
        with writer.connect() as conn:
            assert tuple(conn.execute(query).one()) == (rs.primary.port, False)
        with reader.connect() as conn:
            port, in_recovery = conn.execute(query).one()
            assert in_recovery
            assert port in {r.port for r in rs.replicas}
    finally:
        writer.dispose()
        reader.dispose()


# --- cluster events and metrics ----------------------------------------------------


def test_cluster_events_and_metrics_follow_a_failover(
    pytestconfig: pytest.Config,
) -> None:
    """Events, Prometheus and OpenTelemetry series by member and role, across a failover.

    A fresh primary + replica: the old primary turns read-only and the replica
    is promoted (a switchover), then the old primary crashes.
    """
    import_driver(pytestconfig, "prometheus_client")
    import_driver(pytestconfig, "opentelemetry.sdk.metrics")
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from prometheus_client import CollectorRegistry

    from poolkeeper.cluster import CLUSTER_EVENT_KINDS, ClusterEvent
    from poolkeeper.metrics import otel, prometheus
    from tests.unit.metrics.helpers import otel_point, otel_points, scrape, value

    events: list[ClusterEvent] = []
    registry = CollectorRegistry()
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    with replica_set(1) as fresh:
        old, new = fresh.primary, fresh.replicas[0]
        member = {m.port: f"127.0.0.1:{m.port}" for m in fresh.members}
        cluster = poolkeeper.Cluster(
            fresh.url("psycopg"), refresh_interval=60, min_size=0, name="shop"
        )
        for kind in CLUSTER_EVENT_KINDS:
            cluster.on(kind, events.append)
        try:
            with (
                prometheus.register_cluster(cluster, registry),
                otel.instrument_cluster(cluster, provider),
                cluster,
            ):
                assert sorted((e.kind, e.port) for e in events) == sorted(
                    [
                        ("member_added", old.port),
                        ("member_added", new.port),
                        ("member_up", old.port),
                        ("member_up", new.port),
                        ("primary_change", old.port),
                    ]
                )
                assert events[-1].previous is None
                assert {e.cluster_name for e in events} == {"shop"}
                with cluster.connection() as conn:
                    assert host_of(conn).port == old.port
                with cluster.connection(readonly=True) as conn:
                    assert host_of(conn).port == new.port
                _, samples, types = scrape(registry)
                up = "poolkeeper_cluster_member_up"
                labels = {"cluster": "shop", "member": member[old.port]}
                assert value(samples, up, role="primary", **labels) == 1
                assert (
                    value(
                        samples,
                        up,
                        cluster="shop",
                        member=member[new.port],
                        role="standby",
                    )
                    == 1
                )
                checkouts = "poolkeeper_cluster_member_checkouts_total"
                assert value(samples, checkouts, **labels) == 1
                assert types["poolkeeper_cluster_checkouts"] == "counter"
                route = "poolkeeper_cluster_checkouts_total"
                assert value(samples, route, cluster="shop", route="read") == 1

                del events[:]
                old.make_read_only()
                new.promote()
                cluster.refresh()
                assert [(e.kind, e.port, e.previous) for e in events] == [
                    ("primary_change", new.port, ("127.0.0.1", old.port))
                ]
                with cluster.connection(readonly=True) as conn:  # no standby left
                    assert host_of(conn).port == new.port
                assert [(e.kind, e.port) for e in events[1:]] == [
                    ("read_fallback", new.port)
                ]
                old.crash()
                cluster.refresh()
                assert [(e.kind, e.port, e.role) for e in events[2:]] == [
                    ("member_down", old.port, "unknown")
                ]

                _, samples, _ = scrape(registry)
                assert value(samples, up, role="unknown", **labels) == 0
                assert (
                    value(
                        samples,
                        up,
                        cluster="shop",
                        member=member[new.port],
                        role="primary",
                    )
                    == 1
                )
                assert (
                    value(
                        samples,
                        "poolkeeper_cluster_primary_changes_total",
                        cluster="shop",
                    )
                    == 1
                )
                assert value(samples, route, cluster="shop", route="read_fallback") == 1
                points = otel_points(reader)
                base = {
                    "poolkeeper.cluster.name": "shop",
                    "poolkeeper.cluster.member": member[new.port],
                }
                role = {**base, "poolkeeper.cluster.member.role": "primary"}
                assert (
                    otel_point(points, "poolkeeper.cluster.member.up", role).value == 1
                )
                assert (
                    otel_point(
                        points, "poolkeeper.cluster.member.checkouts", base
                    ).value
                    == 2
                )
                fallback = {
                    "poolkeeper.cluster.name": "shop",
                    "poolkeeper.cluster.route": "read_fallback",
                }
                assert (
                    otel_point(points, "poolkeeper.cluster.checkouts", fallback).value
                    == 1
                )
            # Unregistered: the cluster's series are gone.
            _, samples, _ = scrape(registry)
            assert not any(name.startswith("poolkeeper_cluster") for name, _ in samples)
        finally:
            provider.shutdown()


async def test_async_cluster_events(
    pytestconfig: pytest.Config, rs: ReplicaSet
) -> None:
    import_driver(pytestconfig, "asyncpg")
    from poolkeeper.cluster import ClusterEvent

    events: list[ClusterEvent] = []
    cluster = poolkeeper.AsyncCluster(
        rs.url("asyncpg"), refresh_interval=60, min_size=0
    )
    cluster.on("primary_change", events.append)
    cluster.on("member_up", events.append)
    with pytest.raises(poolkeeper.ConfigError, match="unknown cluster event 'primary'"):
        cluster.on("primary", events.append)
    async with cluster:
        pass
    up = [e.port for e in events if e.kind == "member_up"]
    assert len(up) == len(rs.members)
    assert set(up) == {m.port for m in rs.members}
    assert [(e.port, e.role) for e in events if e.kind == "primary_change"] == [
        (rs.primary.port, "primary")
    ]
