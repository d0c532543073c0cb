"""Self-tests for the PostgreSQL cluster helper and for the fault proxy in front of it."""

from __future__ import annotations

import gc
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.support import fixtures
from tests.support.faultproxy import FaultProxy
from tests.support.pgcluster import PgCluster, StopMode, pg_available

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

# Bound here rather than through a conftest: the conftests are not ours to edit.
pg_cluster = fixtures.pg_cluster
fault_proxy = fixtures.fault_proxy


def _app() -> str:
    return f"pgc-{uuid.uuid4().hex[:8]}"


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        # As any server does (postgres too): sockets of closed connections may
        # linger in TIME_WAIT/FIN_WAIT2 on this port without blocking a listener.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # zombies: exited, not reaped


@pytest.fixture(scope="module")
def own_cluster() -> Iterator[PgCluster]:
    """A cluster this module may stop, crash and restart (the session one is shared)."""
    if (reason := pg_available()) is not None:
        pytest.skip(reason)
    cluster = PgCluster(max_connections=10)
    try:
        cluster.start()
        topdir = cluster.datadir.parent
        yield cluster
    finally:
        cluster.destroy()
    assert not topdir.exists()


@pytest.fixture
def running(own_cluster: PgCluster) -> Iterator[PgCluster]:
    """``own_cluster``, started if a previous test left it down."""
    own_cluster.start()
    yield own_cluster
    own_cluster.reset_gucs()


def test_connect_through_url(pg_cluster: PgCluster) -> None:
    app = _app()
    with psycopg.connect(pg_cluster.url(application_name=app)) as conn:
        row = conn.execute(
            "SELECT current_setting('max_connections'), current_setting('port'),"
            " current_setting('listen_addresses'), current_setting('fsync')"
        ).fetchone()
        assert row == ("40", str(pg_cluster.port), "127.0.0.1", "off")
        assert pg_cluster.backends(app) == 1
        assert pg_cluster.backend_pids(app) == [conn.info.backend_pid]
    assert pg_cluster.url(dbname="postgres", connect_timeout=2).endswith(
        f":{pg_cluster.port}/postgres?connect_timeout=2"
    )


def test_stop_and_start_keep_the_port(running: PgCluster) -> None:
    port, pid = running.port, running.postmaster_pid()
    app = _app()
    conn = psycopg.connect(running.url(application_name=app), autocommit=True)
    with conn:
        running.stop()
        assert not running.is_running
        assert _port_is_free(port)
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    started = time.monotonic()
    with pytest.raises(psycopg.OperationalError, match="refused"):
        psycopg.connect(running.url(connect_timeout=2))
    assert time.monotonic() - started < 0.5  # refused, not timed out
    running.start()
    assert running.port == port
    assert running.postmaster_pid() != pid
    with psycopg.connect(running.url(application_name=app)) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_restart_breaks_old_sessions_only(running: PgCluster, mode: StopMode) -> None:
    old = psycopg.connect(running.url(), autocommit=True)
    with old:
        pid = running.postmaster_pid()
        running.restart(mode)
        assert running.postmaster_pid() != pid
        with pytest.raises(psycopg.OperationalError):
            old.execute("SELECT 1")
    with psycopg.connect(running.url()) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_terminate_and_backends(running: PgCluster) -> None:
    app, other = _app(), _app()
    conns = [
        psycopg.connect(running.url(application_name=name), autocommit=True)
        for name in (app, app, app, other)
    ]
    try:
        assert running.backends(app) == 3
        assert running.terminate(app) == 3
        assert running.backends(app) == 0  # terminate waits for the exit
        assert running.backends(other) == 1
        started = time.monotonic()
        with pytest.raises(psycopg.errors.AdminShutdown):
            conns[0].execute("SELECT 1")
        assert time.monotonic() - started < 0.1
        assert conns[0].broken
        assert conns[3].execute("SELECT 1").fetchone() == (1,)
        assert running.terminate("nobody-uses-this-name") == 0
    finally:
        for conn in conns:
            conn.close()


@pytest.mark.timing
def test_set_guc_takes_effect_for_new_connections(running: PgCluster) -> None:
    running.set_guc("pre_auth_delay", 1)
    try:
        started = time.monotonic()
        psycopg.connect(running.url()).close()
        assert time.monotonic() - started >= 1.0
    finally:
        running.set_guc("pre_auth_delay", None)
    started = time.monotonic()
    psycopg.connect(running.url()).close()
    assert time.monotonic() - started < 0.5


@pytest.mark.timing
def test_frozen_postmaster_blocks_new_connects_only(running: PgCluster) -> None:
    with psycopg.connect(running.url(), autocommit=True) as conn:
        with running.frozen():
            started = time.monotonic()
            with pytest.raises(psycopg.errors.ConnectionTimeout):
                psycopg.connect(running.url(connect_timeout=2))  # libpq minimum
            assert 1.9 < time.monotonic() - started < 2.5
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert running.is_running
    psycopg.connect(running.url()).close()


def test_destroy_stops_and_frees_everything() -> None:
    if (reason := pg_available()) is not None:
        pytest.skip(reason)
    cluster = PgCluster()
    try:
        cluster.start()
        port, pid, topdir = (
            cluster.port,
            cluster.postmaster_pid(),
            cluster.datadir.parent,
        )
        conn = psycopg.connect(cluster.url(), autocommit=True)
    finally:
        cluster.destroy()
    with conn, pytest.raises(psycopg.OperationalError):
        conn.execute("SELECT 1")
    assert not topdir.exists()
    assert not _alive(pid)
    assert _port_is_free(port)
    assert not cluster.is_running
    cluster.destroy()  # idempotent


def test_psycopg_through_proxy_in_pass_mode(
    pg_cluster: PgCluster, fault_proxy: FaultProxy
) -> None:
    app = _app()
    url = pg_cluster.url(application_name=app, port=fault_proxy.port)
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT 42").fetchone() == (42,)
        assert pg_cluster.backends(app) == 1
        stats = fault_proxy.stats
        assert (stats.accepted, stats.live, stats.upstream_connects) == (1, 1, 1)
        assert stats.bytes_up > 0
        assert stats.bytes_down > 0


@pytest.mark.timing
def test_psycopg_fails_fast_in_reset_mode(
    pg_cluster: PgCluster, fault_proxy: FaultProxy
) -> None:
    app = _app()
    url = pg_cluster.url(application_name=app, port=fault_proxy.port, connect_timeout=2)
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        fault_proxy.reset()
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
        assert time.monotonic() - started < 0.05
        assert conn.broken
    started = time.monotonic()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url)
    assert time.monotonic() - started < 0.5
    # The proxy reset the server side too, so the backend goes away.
    deadline = time.monotonic() + 2
    while pg_cluster.backends(app) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pg_cluster.backends(app) == 0
    fault_proxy.pass_through()
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_psycopg_query_held_by_blackhole(
    pg_cluster: PgCluster, fault_proxy: FaultProxy
) -> None:
    url = pg_cluster.url(port=fault_proxy.port)
    with psycopg.connect(url, autocommit=True) as conn:
        fault_proxy.blackhole()
        results: list[object] = []
        worker = threading.Thread(
            target=lambda: results.append(conn.execute("SELECT 7").fetchone())
        )
        worker.start()
        worker.join(0.5)
        assert worker.is_alive()  # hung: no TCP-level error can reach it
        fault_proxy.pass_through()
        worker.join(2)
        assert results == [(7,)]


@pytest.mark.timing
def test_psycopg_connect_times_out_in_slow_accept(
    pg_cluster: PgCluster, fault_proxy: FaultProxy
) -> None:
    fault_proxy.slow_accept()
    started = time.monotonic()
    with pytest.raises(psycopg.errors.ConnectionTimeout):
        psycopg.connect(pg_cluster.url(port=fault_proxy.port, connect_timeout=2))
    assert 1.9 < time.monotonic() - started < 2.5
    # psycopg keeps the timed-out socket open until its PGconn is collected (a
    # reference cycle through the traceback), so the proxy sees the client leave
    # only after a collection.
    gc.collect()
    fault_proxy.wait_live(0)
    assert fault_proxy.stats.upstream_connects == 0
