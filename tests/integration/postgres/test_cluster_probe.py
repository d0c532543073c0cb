"""A cluster object's refresh does not stall on members that are down (issue 20).

The members besides the real server are loopback listeners that never answer
a connection (the connect hangs) or close it after a moment (the connect
fails slowly, as on a host whose server was just killed). A refresh probes
members concurrently and does not wait on a member pool whose last connect
failed moments ago, so it takes about one ``probe_timeout`` however many
members hang, and no time at all for members known to be down.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

import poolkeeper
from tests.conftest import import_driver

pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.anyio]

PROBE_TIMEOUT = 1.0


class Listener:
    """A loopback server that accepts connections and never speaks.

    ``close_after``: seconds after which each connection is closed (None:
    held open until the listener is closed).
    """

    def __init__(self, close_after: float | None) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.05)  # close() does not wake a blocked accept()
        self.stop = threading.Event()
        self.port: int = self.sock.getsockname()[1]
        self.close_after = close_after
        self.accepted: list[socket.socket] = []
        self.timers: list[threading.Timer] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.append(conn)
            if self.close_after is not None:
                timer = threading.Timer(self.close_after, conn.close)
                timer.start()
                self.timers.append(timer)

    def close(self) -> None:
        """Refuse new connections and close the accepted ones (idempotent)."""
        self.stop.set()
        self.thread.join(5)
        self.sock.close()
        for timer in self.timers:
            timer.cancel()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def listeners() -> Iterator[list[Listener]]:
    started: list[Listener] = []
    yield started
    for listener in started:
        listener.close()


def cluster_url(postgres_url: str, driver: str, ports: list[int]) -> str:
    """``postgres_url`` with the listeners' ports listed before the real server."""
    parts = urlsplit(postgres_url)
    auth, _, server = parts.netloc.rpartition("@")
    hosts = ",".join([*(f"127.0.0.1:{port}" for port in ports), server])
    netloc = f"{auth}@{hosts}" if auth else hosts
    # connect_timeout: a hanging member's connect outlasts every probe.
    query = "connect_timeout=30"
    return urlunsplit((f"postgresql+{driver}", netloc, parts.path, query, ""))


def server_port(postgres_url: str) -> int:
    return urlsplit(postgres_url).port or 5432


@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_sync_refresh_probes_hanging_members_at_once(
    pytestconfig: pytest.Config,
    postgres_url: str,
    listeners: list[Listener],
    driver: str,
) -> None:
    """Two members whose connect hangs cost one probe_timeout, not two."""
    import_driver(pytestconfig, driver)
    listeners += [Listener(None), Listener(None)]
    url = cluster_url(postgres_url, driver, [x.port for x in listeners])
    with poolkeeper.Cluster(
        url, refresh_interval=60, probe_timeout=PROBE_TIMEOUT
    ) as cluster:
        started = time.monotonic()
        cluster.refresh()
        took = time.monotonic() - started
        assert cluster.primary == ("127.0.0.1", server_port(postgres_url))
        healthy = {m.port: m.healthy for m in cluster.stats().members}
        for listener in listeners:  # the pools' hanging connects end now
            listener.close()
    # One after another, the two hanging probes took 2 * PROBE_TIMEOUT.
    assert PROBE_TIMEOUT * 0.9 <= took < PROBE_TIMEOUT * 1.6, took
    assert healthy == {
        listeners[0].port: False,
        listeners[1].port: False,
        server_port(postgres_url): True,
    }


@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_sync_refresh_does_not_wait_on_a_member_that_is_down(
    pytestconfig: pytest.Config,
    postgres_url: str,
    listeners: list[Listener],
    driver: str,
) -> None:
    """A member whose connects keep failing is reported unreachable at once."""
    import_driver(pytestconfig, driver)
    listeners.append(Listener(0.3))
    url = cluster_url(postgres_url, driver, [listeners[0].port])
    with poolkeeper.Cluster(
        url, refresh_interval=60, probe_timeout=PROBE_TIMEOUT, min_size=1
    ) as cluster:
        took = []
        for _ in range(3):
            started = time.monotonic()
            cluster.refresh()
            took.append(time.monotonic() - started)
        members = {m.port: m.healthy for m in cluster.stats().members}
    # Waiting on the member's pool, each refresh took PROBE_TIMEOUT.
    assert max(took) < PROBE_TIMEOUT / 2, took
    assert members == {listeners[0].port: False, server_port(postgres_url): True}


@pytest.mark.parametrize("driver", ["psycopg", "asyncpg", "aiopg"])
async def test_async_refresh_does_not_wait_on_a_member_that_is_down(
    pytestconfig: pytest.Config,
    postgres_url: str,
    listeners: list[Listener],
    driver: str,
) -> None:
    """As for threads: a member known to be down is not waited on."""
    import_driver(pytestconfig, driver)
    listeners.append(Listener(0.3))
    url = cluster_url(postgres_url, driver, [listeners[0].port])
    async with poolkeeper.AsyncCluster(
        url, refresh_interval=60, probe_timeout=PROBE_TIMEOUT, min_size=1
    ) as cluster:
        took = []
        for _ in range(3):
            started = time.monotonic()
            await cluster.refresh()
            took.append(time.monotonic() - started)
        members = {m.port: m.healthy for m in cluster.stats().members}
    # Waiting on the member's pool, each refresh took PROBE_TIMEOUT.
    assert max(took) < PROBE_TIMEOUT / 2, took
    assert members == {listeners[0].port: False, server_port(postgres_url): True}
