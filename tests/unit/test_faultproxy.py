"""Self-tests for the fault proxy, against a tiny asyncio echo server on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from types import TracebackType

import pytest

from tests.support.faultproxy import FaultProxy, Mode


class EchoServer:
    """An asyncio echo server on 127.0.0.1 running in its own loop thread."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="echo-server", daemon=True
        )
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.connections = 0
        self.port = 0

    def __enter__(self) -> EchoServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._open(), self._loop).result(5)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    async def _open(self) -> None:
        self._server = await asyncio.start_server(self._echo, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        for writer in list(self._writers):
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        await self._server.wait_closed()
        # Let the handler tasks observe EOF and finish before the loop stops.
        while len(asyncio.all_tasks()) > 1:
            await asyncio.sleep(0.001)

    async def _echo(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass  # the proxy reset us: that is what several tests do
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def _proxy_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("faultproxy")]


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    # Threads this test started must be gone; threads of earlier tests may end
    # meanwhile (an idle otel flush thread, a closed pool's housekeeper).
    before = set(threading.enumerate())
    with EchoServer() as server:
        yield server
    left = [t for t in threading.enumerate() if t not in before]
    assert not left, left


@pytest.fixture
def proxy(echo: EchoServer) -> Iterator[FaultProxy]:
    with FaultProxy(("127.0.0.1", echo.port), seed=1) as fault_proxy:
        yield fault_proxy
        errors = fault_proxy.errors
    assert not errors
    assert not _proxy_threads()


def _connect(proxy: FaultProxy, timeout: float = 2.0) -> socket.socket:
    return socket.create_connection(proxy.address, timeout=timeout)


def _roundtrip(sock: socket.socket, payload: bytes) -> bytes:
    sock.sendall(payload)
    received = b""
    while len(received) < len(payload):
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    return received


def _recv_until_eof(sock: socket.socket) -> bytes:
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def _assert_reset_on_connect(proxy: FaultProxy) -> None:
    # The kernel completes the handshake, then the proxy accepts and resets. The
    # RST may land before connect() returns to us or only on the first recv().
    with pytest.raises(ConnectionResetError), _connect(proxy) as sock:
        sock.recv(10)


def test_pass_through_echoes_and_counts(proxy: FaultProxy, echo: EchoServer) -> None:
    with _connect(proxy) as sock:
        assert _roundtrip(sock, b"hello") == b"hello"
        stats = proxy.stats
        assert (stats.accepted, stats.live, stats.upstream_connects) == (1, 1, 1)
        assert (stats.bytes_up, stats.bytes_down) == (5, 5)
        assert proxy.mode is Mode.PASS
    proxy.wait_live(0)
    assert echo.connections == 1


def test_large_payload_keeps_order(proxy: FaultProxy) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB
    with _connect(proxy) as sock:
        sender = threading.Thread(target=sock.sendall, args=(payload,))
        sender.start()
        received = b""
        while len(received) < len(payload):
            received += sock.recv(65536)
        sender.join()
    assert received == payload
    assert proxy.bytes_up == proxy.bytes_down == len(payload)


def test_client_half_close_is_forwarded(proxy: FaultProxy) -> None:
    with _connect(proxy) as sock:
        sock.sendall(b"last words")
        sock.shutdown(socket.SHUT_WR)
        # The echo server sees EOF only if the proxy forwarded it, then closes.
        assert _recv_until_eof(sock) == b"last words"
    proxy.wait_live(0)


@pytest.mark.timing
def test_latency_adds_delay_per_direction(proxy: FaultProxy) -> None:
    with _connect(proxy) as sock:
        assert _roundtrip(sock, b"warm") == b"warm"
        proxy.latency(0.1)
        started = time.monotonic()
        assert _roundtrip(sock, b"ping") == b"ping"
        elapsed = time.monotonic() - started
        proxy.pass_through()
        started = time.monotonic()
        assert _roundtrip(sock, b"pong") == b"pong"
        fast = time.monotonic() - started
    assert 0.2 <= elapsed < 0.4  # 0.1 s each way
    assert fast < 0.05


def test_latency_jitter_never_reorders(proxy: FaultProxy) -> None:
    proxy.latency(0.01, jitter=0.01)
    messages = [f"{i:04d}".encode() for i in range(100)]
    with _connect(proxy) as sock:
        for message in messages:
            sock.sendall(message)
        received = b""
        while len(received) < 400:
            received += sock.recv(65536)
    assert received == b"".join(messages)


def test_blackhole_holds_bytes_then_delivers(proxy: FaultProxy) -> None:
    with _connect(proxy, timeout=0.3) as sock:
        assert _roundtrip(sock, b"a") == b"a"
        proxy.blackhole()
        sock.sendall(b"held")  # the proxy's kernel still ACKs
        with pytest.raises(TimeoutError):
            sock.recv(10)
        assert proxy.live == 1  # nothing was closed
        proxy.pass_through()
        assert sock.recv(10) == b"held"


def test_blackhole_new_connection_hangs(proxy: FaultProxy) -> None:
    proxy.blackhole()
    with _connect(proxy, timeout=0.3) as sock:  # the TCP handshake completes
        sock.sendall(b"x")
        with pytest.raises(TimeoutError):
            sock.recv(10)
    proxy.pass_through()
    proxy.wait_live(0)


def test_reset_errors_live_and_new_links_immediately(proxy: FaultProxy) -> None:
    first, second = _connect(proxy), _connect(proxy)
    with first, second:
        assert _roundtrip(first, b"1") == b"1"
        assert _roundtrip(second, b"2") == b"2"
        started = time.monotonic()
        proxy.reset()
        for sock in (first, second):
            with pytest.raises(ConnectionResetError):
                sock.recv(10)
        assert time.monotonic() - started < 0.1
        assert proxy.live == 0
    _assert_reset_on_connect(proxy)
    assert proxy.stats.rejected == 1


def test_reset_all_keeps_the_mode(proxy: FaultProxy) -> None:
    first, second = _connect(proxy), _connect(proxy)
    with first, second:
        proxy.wait_live(2)
        assert proxy.reset_all() == 2
        with pytest.raises(ConnectionResetError):
            first.recv(10)
    with _connect(proxy) as sock:
        assert _roundtrip(sock, b"still passing") == b"still passing"


def test_refuse_resets_new_links_but_keeps_live_ones(
    proxy: FaultProxy, echo: EchoServer
) -> None:
    with _connect(proxy) as live:
        assert _roundtrip(live, b"before") == b"before"
        proxy.refuse()
        _assert_reset_on_connect(proxy)
        assert _roundtrip(live, b"after") == b"after"
    stats = proxy.stats
    assert (stats.accepted, stats.rejected, stats.upstream_connects) == (2, 1, 1)
    assert echo.connections == 1


def test_slow_accept_holds_until_mode_changes(
    proxy: FaultProxy, echo: EchoServer
) -> None:
    proxy.slow_accept()
    with _connect(proxy, timeout=0.3) as sock:
        sock.sendall(b"early")
        with pytest.raises(TimeoutError):
            sock.recv(10)
        assert (proxy.live, proxy.stats.upstream_connects, echo.connections) == (
            1,
            0,
            0,
        )
        proxy.pass_through()
        assert sock.recv(10) == b"early"
    assert echo.connections == 1


def test_slow_accept_client_that_gives_up_is_dropped(proxy: FaultProxy) -> None:
    proxy.slow_accept()
    with _connect(proxy):
        proxy.wait_live(1)
    proxy.wait_live(0)
    assert proxy.stats.upstream_connects == 0


def test_truncate_after_cuts_the_stream(proxy: FaultProxy) -> None:
    with _connect(proxy) as sock:
        assert _roundtrip(sock, b"ok") == b"ok"
        proxy.truncate_after(5, direction="down")
        sock.sendall(b"0123456789")
        assert _recv_until_eof(sock) == b"01234"
    proxy.wait_live(0)
    assert proxy.stats.bytes_up == 12


def test_upstream_down_resets_the_client() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]  # bound, never listening: refused
        with FaultProxy(("127.0.0.1", dead_port)) as proxy:
            _assert_reset_on_connect(proxy)
    assert not proxy.errors


def test_stop_closes_links_and_joins_thread(echo: EchoServer) -> None:
    proxy = FaultProxy(("127.0.0.1", echo.port)).start()
    assert len(_proxy_threads()) == 1
    with _connect(proxy) as sock:
        assert _roundtrip(sock, b"x") == b"x"
        proxy.stop()
        assert not _proxy_threads()
        with contextlib.suppress(ConnectionResetError):
            assert sock.recv(10) == b""
    proxy.stop()  # idempotent
    assert proxy.stats.accepted == 1  # counters survive stop
    with pytest.raises(RuntimeError):
        proxy.reset_all()


def test_set_mode_validates(proxy: FaultProxy) -> None:
    with pytest.raises(ValueError, match="bogus"):
        proxy.set_mode("bogus")
    with pytest.raises(ValueError, match=">= 0"):
        proxy.latency(-1.0)
    proxy.set_mode("latency", latency=0.0)
    assert proxy.mode is Mode.LATENCY


def test_unstarted_proxy_has_no_port() -> None:
    proxy = FaultProxy(("127.0.0.1", 1))
    with pytest.raises(RuntimeError, match="not started"):
        _ = proxy.port
    proxy.stop()  # no-op


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    received = b""
    while len(received) < size:
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    return received


@pytest.mark.timing
def test_bandwidth_caps_throughput_per_direction(proxy: FaultProxy) -> None:
    payload = bytes(range(256)) * 160  # 40 KiB each way, at 100 KiB/s
    with _connect(proxy) as sock:
        assert _roundtrip(sock, b"warm") == b"warm"
        proxy.bandwidth(100 * 1024)
        assert proxy.mode is Mode.BANDWIDTH
        started = time.monotonic()
        sender = threading.Thread(target=sock.sendall, args=(payload,))
        sender.start()
        received = _read_exactly(sock, len(payload))
        sender.join()
        elapsed = time.monotonic() - started
        proxy.pass_through()
        started = time.monotonic()
        assert _roundtrip(sock, payload) == payload
        fast = time.monotonic() - started
    assert received == payload  # paced, never reordered or lost
    # Up and down are paced separately but overlap: ~0.4 s, not 0.8 s. The
    # first slice goes out at once, hence a little under 0.4 s is possible.
    assert 0.3 <= elapsed < 0.9, elapsed
    # Uncapped: well under the 0.4 s the cap would take for 40 KiB, with room
    # for a loaded machine (a capped round trip cannot take less than 0.39 s).
    assert fast < 0.3, fast


@pytest.mark.timing
def test_bandwidth_combines_with_latency(proxy: FaultProxy) -> None:
    with _connect(proxy) as sock:
        assert _roundtrip(sock, b"warm") == b"warm"
        proxy.bandwidth(10_000, latency=0.1)
        started = time.monotonic()
        assert _roundtrip(sock, b"x" * 2000) == b"x" * 2000
        elapsed = time.monotonic() - started
        # 2 x 0.1 s latency, plus 2000 bytes at 10 kB/s: the first 100-byte
        # slice goes at once, the other 19 take 0.19 s going up; coming down
        # the echoed slices are paced as they arrive, so that overlaps:
        # about 0.39 s in all.
        assert 0.35 <= elapsed < 0.9, elapsed
        proxy.latency(0.05, rate=1_000_000)
        started = time.monotonic()
        assert _roundtrip(sock, b"y" * 2000) == b"y" * 2000
        assert 0.1 <= time.monotonic() - started < 0.3


def test_bandwidth_needs_a_rate(proxy: FaultProxy) -> None:
    with pytest.raises(ValueError, match="rate > 0"):
        proxy.set_mode("bandwidth")
    with pytest.raises(ValueError, match=">= 0"):
        proxy.latency(0.1, rate=-1)


def test_deaf_connects_hang_then_proceed(proxy: FaultProxy, echo: EchoServer) -> None:
    with _connect(proxy) as live:
        assert _roundtrip(live, b"before") == b"before"
        proxy.deaf()
        assert proxy.mode is Mode.DEAF
        # The kernel completes the handshake into the backlog: connect()
        # returns, but nothing ever answers.
        with _connect(proxy, timeout=0.3) as held:
            held.sendall(b"waiting")
            with pytest.raises(TimeoutError):
                held.recv(10)
            stats = proxy.stats
            assert (stats.accepted, stats.live, echo.connections) == (1, 1, 1)
            assert _roundtrip(live, b"live link") == b"live link"  # unaffected
            proxy.pass_through()
            held.settimeout(2.0)
            # Accepted from the backlog, connected upstream, bytes delivered.
            assert held.recv(10) == b"waiting"
        assert proxy.stats.accepted == 2
    proxy.wait_live(0)
    assert echo.connections == 2


def test_deaf_backlog_is_reset_on_stop(echo: EchoServer) -> None:
    proxy = FaultProxy(("127.0.0.1", echo.port)).start()
    try:
        proxy.deaf()
        sock = _connect(proxy, timeout=2.0)
    finally:
        proxy.stop()
    # Closing a listener resets the connections still in its backlog.
    with sock, contextlib.suppress(ConnectionResetError):
        assert sock.recv(10) == b""
    assert proxy.stats.accepted == 0
    assert not proxy.errors
    assert not _proxy_threads()


def test_deaf_client_that_gave_up_is_dropped(proxy: FaultProxy) -> None:
    proxy.deaf()
    with _connect(proxy):
        pass  # gives up before it was ever accepted
    proxy.pass_through()
    deadline = time.monotonic() + 2.0
    while proxy.stats.accepted < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    proxy.wait_live(0)
    assert proxy.stats.accepted == 1
