"""Multi-host PostgreSQL URLs, the shared host loop and cluster routing (no server)."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import pytest

import poolkeeper
from poolkeeper import ConfigError
from poolkeeper._config import parse_url
from poolkeeper.cluster._probe import member_url, members_of, patroni_leader
from poolkeeper.cluster._routing import Observation, Router
from poolkeeper.drivers._hosts import (
    TARGET_SESSION_ATTRS,
    HostTarget,
    NoMatchingHost,
    connect_hosts,
    connect_hosts_async,
    host_target,
    role_from,
    role_matches,
)

SYNC_DRIVERS = ["psycopg", "psycopg2"]
ASYNC_DRIVERS = ["psycopg", "asyncpg", "aiopg"]


def target(url: str, **connect_args: Any) -> HostTarget:
    return host_target(parse_url(url), connect_args, timeout_keys=("connect_timeout",))


# --- parsing ---------------------------------------------------------------------


def test_host_list_with_ports_ipv6_and_socket_dirs() -> None:
    url = parse_url(
        "postgresql://u:p%40ss@h1:5432,[::1]:5433,%2Frun%2Fpg,h4/db?sslmode=disable"
    )
    assert url.hosts == (("h1", 5432), ("::1", 5433), ("/run/pg", None), ("h4", None))
    assert (url.host, url.port, url.username, url.password, url.database) == (
        "h1",
        5432,
        "u",
        "p@ss",
        "db",
    )
    assert url.redacted() == (
        "postgresql://u:***@h1:5432,[::1]:5433,%2Frun%2Fpg,h4/db?sslmode=disable"
    )


def test_one_port_applies_to_every_host_and_query_lists_win() -> None:
    assert target("postgresql://a,b,c/db?port=6000").hosts == (
        ("a", 6000),
        ("b", 6000),
        ("c", 6000),
    )
    assert target("postgresql:///db?host=x,y&port=1,2").hosts == (("x", 1), ("y", 2))
    assert target("postgresql://a:7/db", host="/tmp").hosts == (("/tmp", 7),)


@pytest.mark.parametrize(
    ("url", "connect_args", "named"),
    [
        ("postgresql://a,b/db?target_session_attrs=master", {}, "target_session_attrs"),
        ("postgresql://a,b/db?load_balance_hosts=roundrobin", {}, "load_balance_hosts"),
        ("postgresql://a,b/db", {"load_balance_hosts": "yes"}, "load_balance_hosts"),
        ("postgresql://a,b,c/db?port=1,2", {}, "port"),
        ("postgresql://a,b/db?port=1,x", {}, "port"),
        ("postgresql://a,b/db?connect_timeout=soon", {}, "connect_timeout"),
        ("postgresql://a,b/db?connect_timeout=-1", {}, "connect_timeout"),
    ],
)
def test_bad_values_are_config_errors_naming_the_parameter(
    url: str, connect_args: dict[str, Any], named: str
) -> None:
    with pytest.raises(ConfigError, match=named):
        target(url, **connect_args)


@pytest.mark.parametrize("driver", SYNC_DRIVERS)
def test_sync_pool_refuses_bad_values_at_construction(driver: str) -> None:
    pytest.importorskip(driver)
    with pytest.raises(ConfigError, match="target_session_attrs"):
        poolkeeper.Pool(f"postgresql+{driver}://u@a:1,b:2/db?target_session_attrs=rw")
    with pytest.raises(ConfigError, match="load_balance_hosts"):
        poolkeeper.Pool(f"postgresql+{driver}://u@a:1,b:2/db?load_balance_hosts=1")


@pytest.mark.parametrize("driver", ASYNC_DRIVERS)
def test_async_pool_refuses_bad_values_at_construction(driver: str) -> None:
    pytest.importorskip(driver)
    with pytest.raises(ConfigError, match="target_session_attrs"):
        poolkeeper.AsyncPool(
            f"postgresql+{driver}://u@a:1,b:2/db?target_session_attrs=rw"
        )
    with pytest.raises(ConfigError, match="port"):
        poolkeeper.AsyncPool(f"postgresql+{driver}://u@a,b,c/db?port=1,2")


def test_bad_port_in_host_list() -> None:
    with pytest.raises(ConfigError, match="port"):
        parse_url("postgresql://a:1,b:99999/db")
    with pytest.raises(ConfigError, match="IPv6"):
        parse_url("postgresql://[::1/db")


def test_mysql_url_with_several_hosts_is_refused() -> None:
    pytest.importorskip("pymysql")
    with pytest.raises(ConfigError, match="2 hosts"):
        poolkeeper.Pool("mysql+pymysql://u@a:1,b:2/db")


# --- roles -------------------------------------------------------------------------


def test_roles_and_what_each_target_accepts() -> None:
    assert role_from("on", "off") == "standby"
    assert role_from("off", "on") == "read-only"
    assert role_from("false", "off") == "primary"
    assert role_from(None, None) == "unknown"
    accepts = {
        want: {r for r in ("primary", "standby", "read-only") if role_matches(want, r)}
        for want in TARGET_SESSION_ATTRS
    }
    assert accepts == {
        "any": {"primary", "standby", "read-only"},
        "read-write": {"primary"},
        "read-only": {"standby", "read-only"},
        "primary": {"primary", "read-only"},
        "standby": {"standby"},
        "prefer-standby": {"primary", "standby", "read-only"},
    }


# --- the shared host loop ------------------------------------------------------------

ROLES = {"p": "primary", "s1": "standby", "s2": "standby", "ro": "read-only"}


class FakeServers:
    """Hosts named after their role; "down" refuses connections."""

    def __init__(self) -> None:
        self.tried: list[str | None] = []
        self.closed: list[str] = []

    def connect(self, host: str | None, port: int | None) -> str:
        self.tried.append(host)
        if host == "down":
            raise ConnectionRefusedError(f"{host} refused")
        assert host is not None
        return host

    def role(self, conn: str) -> Any:
        return ROLES[conn]

    def close(self, conn: str) -> None:
        self.closed.append(conn)


@pytest.mark.parametrize(
    ("want", "chosen", "closed"),
    [
        ("any", "s1", []),
        ("read-write", "p", ["s1"]),
        ("primary", "p", ["s1"]),
        ("read-only", "s1", []),
        ("standby", "s1", []),
        ("prefer-standby", "s1", []),
    ],
)
def test_sync_loop_picks_the_first_match(
    want: str, chosen: str, closed: list[str]
) -> None:
    servers = FakeServers()
    hosts = target(f"postgresql://down,s1,p/db?target_session_attrs={want}")
    conn = connect_hosts(hosts, servers.connect, servers.role, servers.close)
    assert conn == chosen
    assert servers.closed == closed


def test_prefer_standby_tries_every_host_for_a_standby_first() -> None:
    servers = FakeServers()
    hosts = target("postgresql://p,ro,s2/db?target_session_attrs=prefer-standby")
    assert connect_hosts(hosts, servers.connect, servers.role, servers.close) == "s2"
    servers = FakeServers()
    hosts = target("postgresql://p,ro/db?target_session_attrs=prefer-standby")
    assert connect_hosts(hosts, servers.connect, servers.role, servers.close) == "p"
    assert servers.tried == ["p", "ro", "p"]


def test_no_match_and_all_down_errors() -> None:
    servers = FakeServers()
    hosts = target("postgresql://p,ro/db?target_session_attrs=standby")
    with pytest.raises(NoMatchingHost, match=r"p:\(default\) is primary"):
        connect_hosts(hosts, servers.connect, servers.role, servers.close)
    assert servers.closed == ["p", "ro"]
    hosts = target("postgresql://down,down/db?target_session_attrs=read-write")
    with pytest.raises(ConnectionRefusedError):
        connect_hosts(hosts, servers.connect, servers.role, servers.close)


def test_load_balance_random_shuffles_with_the_given_rng() -> None:
    hosts = target("postgresql://s1,s2/db?load_balance_hosts=random")
    firsts = set()
    for seed in range(20):
        servers = FakeServers()
        firsts.add(
            connect_hosts(
                hosts, servers.connect, servers.role, servers.close, random.Random(seed)
            )
        )
    assert firsts == {"s1", "s2"}


def test_async_loop_bounds_each_host_by_connect_timeout() -> None:
    servers = FakeServers()

    async def connect(host: str | None, port: int | None) -> str:
        if host == "hang":
            await asyncio.sleep(30)
        return servers.connect(host, port)

    async def role(conn: str) -> Any:
        return servers.role(conn)

    async def close(conn: str) -> None:
        servers.close(conn)

    hosts = target(
        "postgresql://hang,s1,p/db?target_session_attrs=read-write&connect_timeout=0.2"
    )
    started = time.monotonic()
    assert asyncio.run(connect_hosts_async(hosts, connect, role, close)) == "p"
    assert time.monotonic() - started < 2
    assert servers.closed == ["s1"]


# --- cluster routing ---------------------------------------------------------------


class FakePool:
    def __init__(self, name: str) -> None:
        self.name = name
        self.in_use = 0


def router(**kwargs: Any) -> tuple[Router, dict[str, FakePool]]:
    r = Router(**kwargs)
    pools = {}
    for name in ("p", "a", "b"):
        pools[name] = FakePool(name)
        r.add((name, 1), pools[name])
    return r, pools


def observe(r: Router, **roles: tuple[str, float | None]) -> None:
    r.observe(
        [Observation(n, 1, role, lag) for n, (role, lag) in roles.items()],  # type: ignore[arg-type]
        complete=False,
    )


def busy(pool: Any) -> int:
    return int(pool.in_use)


def take(r: Router, readonly: bool) -> Any:
    pool = r.pick(readonly, busy)
    if pool is not None:
        r.checked_out(pool, readonly)
    return pool


def test_writes_to_primary_reads_round_robin_then_least_busy() -> None:
    r, pools = router()
    observe(r, p=("primary", 0.0), a=("standby", 0.0), b=("standby", 0.0))
    assert take(r, False) is pools["p"]
    assert {take(r, True).name for _ in range(4)} == {"a", "b"}
    pools["a"].in_use = 3
    assert [take(r, True).name for _ in range(3)] == ["b", "b", "b"]
    assert (r.writes, r.reads, r.read_fallbacks) == (1, 7, 0)


def test_lagging_replicas_are_skipped_then_primary_fallback() -> None:
    r, pools = router(max_lag=1.0)
    observe(r, p=("primary", 0.0), a=("standby", 5.0), b=("standby", 0.2))
    assert {take(r, True).name for _ in range(4)} == {"b"}
    observe(r, p=("primary", 0.0), a=("standby", 5.0), b=("standby", None))
    assert take(r, True) is pools["p"]
    assert r.read_fallbacks == 1
    strict, _ = router(max_lag=1.0, fallback_to_primary=False)
    observe(strict, p=("primary", 0.0), a=("standby", 5.0), b=("read-only", 0.0))
    assert take(strict, True) is None


def test_primary_moves_only_when_another_primary_is_seen() -> None:
    r, pools = router()
    observe(r, p=("primary", 0.0), a=("standby", 0.0))
    r.observe([Observation("p", 1, "unknown", None, healthy=False)], complete=False)
    assert take(r, False) is pools["p"]  # writers get the driver's error
    observe(r, p=("read-only", 0.0), a=("primary", 0.0))
    assert take(r, False) is pools["a"]
    assert r.primary_changes == 1
    gone = r.observe([Observation("a", 1, "primary", 0.0)], complete=True)
    assert {p.name for p in gone} == {"p", "b"}


def test_cluster_urls_and_patroni_leader() -> None:
    assert members_of("postgresql+asyncpg://u@a:1,b:2/db") == [("a", 1), ("b", 2)]
    with pytest.raises(ConfigError, match="postgresql"):
        members_of("mysql://u@a/db")
    assert (
        member_url(
            "postgresql+psycopg://u:p%2F@a:1,[::1]:2/d?target_session_attrs=any&x=1",
            "::1",
            2,
        )
        == "postgresql+psycopg://u:p%2F@[::1]:2/d?x=1"
    )
    members = [
        {"name": "m0", "role": "replica", "state": "running", "host": "h", "port": 1},
        {"name": "m1", "role": "leader", "state": "running", "host": "h", "port": 2},
    ]
    assert patroni_leader(members) == ("h", 2)
    assert patroni_leader(members[:1]) is None


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"max_lag": -1}, "max_lag"),
        ({"refresh_interval": 0}, "refresh_interval"),
        ({"patroni": "localhost:8008"}, "patroni"),
        ({"fallback_to_primary": "yes"}, "fallback_to_primary"),
        ({"name": "x", "connect": "y"}, "connect"),
    ],
)
def test_cluster_arguments_are_checked(kwargs: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        poolkeeper.Cluster("postgresql://u@a:1,b:2/db", **kwargs)


def test_no_host_of_the_wanted_role_is_a_transient_connect_error() -> None:
    # A failover or promotion may bring a host of that role: callers wait
    # and the pool retries, as for a server starting up.
    from poolkeeper._core.connect_errors import ConnectFault
    from poolkeeper.drivers._connect_errors import classify_asyncpg, classify_libpq

    ours = NoMatchingHost(
        "no host accepted a session with target_session_attrs=read-write: "
        "a:1 failed: Connection refused; b:2 is standby"
    )
    assert classify_libpq(ours) is ConnectFault.TRANSIENT
    assert classify_asyncpg(ours) is ConnectFault.TRANSIENT
    libpq = (
        'connection to server at "127.0.0.1", port 5433 failed: server is in hot '
        "standby mode\n- host: '127.0.0.1', port: '1': Connection refused"
    )
    assert classify_libpq(Exception(libpq)) is ConnectFault.TRANSIENT


def test_router_records_cluster_events_in_order() -> None:
    r, _ = router()
    assert [(k, hp) for k, hp, _, _ in r.take_changes()] == [
        ("member_added", ("p", 1)),
        ("member_added", ("a", 1)),
        ("member_added", ("b", 1)),
    ]
    observe(r, p=("primary", 0.0), a=("standby", 0.0), b=("standby", 0.0))
    assert r.take_changes() == [
        ("member_up", ("p", 1), "primary", None),
        ("member_up", ("a", 1), "standby", None),
        ("member_up", ("b", 1), "standby", None),
        ("primary_change", ("p", 1), "primary", None),
    ]
    observe(r, p=("primary", 0.0), a=("standby", 0.0), b=("standby", 0.0))
    assert r.take_changes() == []  # nothing changed
    r.observe(
        [
            Observation("p", 1, "unknown", None, healthy=False),
            Observation("a", 1, "primary", 0.0),
            Observation("b", 1, "standby", 9.0),
        ],
        complete=False,
    )
    assert r.take_changes() == [
        ("member_down", ("p", 1), "unknown", None),
        ("primary_change", ("a", 1), "primary", ("p", 1)),
    ]
    take(r, True)  # b is a healthy standby: a read, no event
    assert r.take_changes() == []
    r.observe([Observation("a", 1, "primary", 0.0)], complete=True)
    assert r.take_changes() == [
        ("member_removed", ("p", 1), "unknown", None),
        ("member_removed", ("b", 1), "standby", None),
    ]
    take(r, True)  # no standby left: the primary serves it
    assert r.take_changes() == [("read_fallback", ("a", 1), "primary", None)]
    assert r.take_changes() == []


def test_cluster_event_listeners_are_checked_and_isolated(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from poolkeeper.cluster import ClusterEvent
    from poolkeeper.cluster._events import ClusterEvents

    bus = ClusterEvents()
    with pytest.raises(ConfigError, match="unknown cluster event 'nope'"):
        bus.on("nope", print)
    seen: list[ClusterEvent] = []

    def broken(event: ClusterEvent) -> None:
        raise RuntimeError("listener bug")

    bus.on("member_down", broken)
    bus.on("member_down", seen.append)
    bus.emit("c", [("member_down", ("h", 5), "unknown", None)])
    assert seen == [ClusterEvent("member_down", "c", "h", 5, "unknown", None)]
    assert "listener" in caplog.text and "member_down" in caplog.text
    bus.off("member_down", seen.append)
    bus.off("member_down", seen.append)  # twice: no error
    bus.emit("c", [("member_down", ("h", 5), "unknown", None)])
    assert len(seen) == 1


def test_least_busy_counts_connections_held_through_the_cluster() -> None:
    r, _ = router()
    observe(r, p=("primary", 0.0), a=("standby", 0.0), b=("standby", 0.0))
    first = r.pick(True)
    r.checked_out(first, True)
    other = ({"a", "b"} - {first.name}).pop()
    # Without a busy callable the router uses its own count: no stats() call.
    assert [r.pick(True).name for _ in range(3)] == [other] * 3
    r.checked_in(first)
    assert {r.pick(True).name for _ in range(4)} == {"a", "b"}
