"""An asyncio TCP proxy that injects network faults between a client and a server.

The proxy runs its own event loop in a daemon thread, so synchronous tests, asyncio
tests and tests whose own loop is blocked can all drive it the same way. Every
public method is thread-safe: it hands the work to the proxy loop and waits for it
to finish, so when ``set_mode("reset")`` returns the RSTs have already been sent.

Example:
    >>> with FaultProxy(("127.0.0.1", 5432)) as proxy:  # doctest: +SKIP
    ...     conn = psycopg.connect(f"host=127.0.0.1 port={proxy.port}")
    ...     proxy.blackhole()  # the next query hangs
    ...     proxy.pass_through()  # held bytes are delivered, the query finishes

Modes (one at a time, switchable at runtime, applied to live and new links):

* ``pass``: forward bytes unchanged.
* ``latency``: delay every chunk by ``seconds`` plus ``uniform(-jitter, jitter)``,
  per direction (a round trip pays it twice). Order is always preserved.
* ``blackhole``: keep reading from both sockets but hold the bytes; nothing is
  forwarded and no socket is closed. Held bytes (and EOFs) are delivered in order
  when the mode changes, like a network that recovers and retransmits.
* ``reset``: abort every live link with an RST (``SO_LINGER`` 0) on both sides, and
  do the same to every new connection right after accepting it.
* ``refuse``: new connections are accepted, then reset at once. Live links keep
  working.
* ``slow_accept``: new connections are accepted but not connected upstream while
  the mode lasts; bytes the client sends are buffered. When the mode changes the
  held links connect upstream and proceed.
* ``truncate``: each link is closed (FIN, after flushing) once ``limit`` more bytes
  have been forwarded on it, counted in the chosen direction(s).
* ``bandwidth``: cap each direction of each link at ``rate`` bytes per second
  (bytes are written in slices of about 10 ms worth, each writer keeping to
  a schedule that catches up a late wake-up of up to 0.1 s);
  may be combined with ``latency``/``jitter``. ``latency`` mode accepts a
  ``rate`` too, so the two are one link model.
* ``deaf``: stop accepting. The listening socket stays open, so the kernel
  completes handshakes into its backlog (then drops SYNs once the backlog is
  full): a client's connect "succeeds" and then waits for an answer that never
  comes, like a server whose accept loop is stuck (psycopg's ``deaf_listen``).
  Live links keep working. Leaving the mode accepts the backlog in order, and
  those links proceed normally (clients that gave up meanwhile just close).

Limitation:
    A proxy black hole is **not** a network partition. The proxy's kernel keeps
    ACKing the client's segments, so client-side TCP keepalives and
    ``TCP_USER_TIMEOUT`` never fire; only an application-level deadline notices.
    That matches a hung-but-alive server (and asyncpg's fuzzing proxy). For true
    packet loss use an nftables drop rule; for a frozen server use SIGSTOP.

Not implemented from the reliability plan: per-link targeting and
``close_upstream_only``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import random
import socket
import struct
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, TypeVar

__all__ = ["Direction", "FaultProxy", "Mode", "ProxyStats"]

_T = TypeVar("_T")
_CHUNK = 65536
# l_onoff=1, l_linger=0: close() discards the send buffer and emits an RST
# instead of a FIN, which is what a crashed peer or a middlebox reset looks like.
_LINGER_RST = struct.pack("ii", 1, 0)
# A queued chunk: (loop time it is due, payload); None forwards an EOF.
_Item = tuple[float, bytes] | None

Direction = Literal["up", "down", "both"]


class Mode(str, enum.Enum):
    """Fault modes; the values are accepted as strings by :meth:`FaultProxy.set_mode`."""

    PASS = "pass"
    LATENCY = "latency"
    BLACKHOLE = "blackhole"
    RESET = "reset"
    REFUSE = "refuse"
    SLOW_ACCEPT = "slow_accept"
    TRUNCATE = "truncate"
    BANDWIDTH = "bandwidth"
    DEAF = "deaf"


@dataclass(frozen=True)
class ProxyStats:
    """A consistent snapshot of the proxy counters.

    Attributes:
        accepted: Client connections accepted since start, including rejected ones.
        rejected: Connections reset right after accept (``refuse``/``reset`` modes).
        live: Links currently open (held ``slow_accept`` links included).
        upstream_connects: Successful connections made to the upstream server.
        bytes_up: Bytes forwarded client -> server.
        bytes_down: Bytes forwarded server -> client.
        truncated: Links closed by ``truncate`` mode (budget spent).
        last_truncated_at: ``time.monotonic()`` of the latest such cut (the
            instant the proxy closed the link), or None.
    """

    accepted: int
    rejected: int
    live: int
    upstream_connects: int
    bytes_up: int
    bytes_down: int
    truncated: int = 0
    last_truncated_at: float | None = None


@dataclass(frozen=True)
class _Settings:
    mode: Mode = Mode.PASS
    latency: float = 0.0
    jitter: float = 0.0
    limit: int = 0
    direction: Direction = "both"
    rate: float = 0.0

    @property
    def delays(self) -> bool:
        """Whether ``latency``/``jitter`` apply (latency and bandwidth modes)."""
        return self.mode in (Mode.LATENCY, Mode.BANDWIDTH)

    @property
    def paced(self) -> bool:
        """Whether ``rate`` applies."""
        return self.rate > 0 and self.mode in (Mode.LATENCY, Mode.BANDWIDTH)


#: Seconds of traffic written at once under a bandwidth cap.
_PACE_SLICE = 0.01
#: Seconds a paced writer that woke late (a loaded machine) may catch up on
#: its schedule, so late sleeps do not add up and slow the stream below its
#: cap; a writer idle longer than this starts a fresh schedule. The cap thus
#: holds over any 0.1 s window, not over each 10 ms slice.
_PACE_CATCH_UP = 0.1


class _Truncated(Exception):
    """Raised by a writer pump when the link's truncation budget is spent."""


def _abort(writer: asyncio.StreamWriter, *, rst: bool) -> None:
    if rst:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            # The socket may already be dead (peer reset); aborting still works.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    writer.transport.abort()


class _Link:
    """One client connection and, once made, its upstream connection."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.client_reader = reader
        self.client_writer = writer
        self.upstream_writer: asyncio.StreamWriter | None = None
        self.task: asyncio.Task[None] | None = None
        self.budget: int | None = None
        self.client_eof = False
        self.closed = False

    def writers(self) -> list[asyncio.StreamWriter]:
        found = [self.client_writer]
        if self.upstream_writer is not None:
            found.append(self.upstream_writer)
        return found

    def close(self, *, rst: bool) -> None:
        """Close both sockets: RST (abort) or FIN after flushing (close)."""
        if self.closed:
            return
        self.closed = True
        for writer in self.writers():
            if rst:
                _abort(writer, rst=True)
            else:
                writer.close()


class FaultProxy:
    """A TCP proxy on ``127.0.0.1`` (random port) with switchable fault modes.

    Args:
        upstream: ``(host, port)`` of the real server.
        host: Address to listen on; loopback by default so tests never expose it.
        connect_timeout: Bound on each upstream connect; on failure the client
            link is reset, as the client would see with a refused connection.
        seed: Seed for the jitter RNG, for reproducible latency.
    """

    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        host: str = "127.0.0.1",
        connect_timeout: float = 5.0,
        seed: int | None = None,
    ) -> None:
        self._upstream = upstream
        self._host = host
        self._connect_timeout = connect_timeout
        self._rng = random.Random(seed)
        self._settings = _Settings()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._listener: socket.socket | None = None
        self._port: int | None = None
        self._links: set[_Link] = set()
        self._adopting: set[asyncio.Task[None]] = set()
        self._changed: asyncio.Event | None = None
        self._closing = False
        self._errors: list[str] = []
        self._accepted = 0
        self._rejected = 0
        self._upstream_connects = 0
        self._bytes_up = 0
        self._bytes_down = 0
        self._truncated = 0
        self._last_truncated_at: float | None = None

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> FaultProxy:
        """Start the loop thread and bind the listening socket.

        Returns:
            The proxy itself, for chaining.

        Raises:
            RuntimeError: If the proxy was already started.
        """
        if self._thread is not None:
            raise RuntimeError("FaultProxy already started")
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(self._on_loop_error)
        self._loop = loop
        self._thread = threading.Thread(
            target=self._run_loop, args=(loop,), name="faultproxy", daemon=True
        )
        self._thread.start()
        try:
            self._call(self._open)
        except BaseException:
            self._halt_loop()
            raise
        self._thread.name = f"faultproxy-{self._port}"
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Close the listener and every link, stop the loop and join its thread.

        Safe to call more than once, and on a proxy that never started.

        Args:
            timeout: Bound on the close and on the thread join, in seconds.
        """
        if self._thread is None:
            return
        try:
            if self._running():
                self._call(self._close, timeout=timeout)
        finally:
            self._halt_loop(timeout)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ---------------------------------------------------------------- properties

    @property
    def port(self) -> int:
        """The listening port (only valid after :meth:`start`)."""
        if self._port is None:
            raise RuntimeError("FaultProxy not started")
        return self._port

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` that clients should connect to."""
        return (self._host, self.port)

    @property
    def upstream(self) -> tuple[str, int]:
        """``(host, port)`` of the server behind the proxy."""
        return self._upstream

    @property
    def mode(self) -> Mode:
        """The current mode."""
        return self._settings.mode

    @property
    def stats(self) -> ProxyStats:
        """A snapshot of all counters (taken on the proxy loop while it runs)."""
        if not self._running():
            return self._snapshot()
        return self._call(self._snapshot_async)

    @property
    def accepted(self) -> int:
        """Client connections accepted so far (rejected ones included)."""
        return self.stats.accepted

    @property
    def live(self) -> int:
        """Links currently open."""
        return self.stats.live

    @property
    def bytes_up(self) -> int:
        """Bytes forwarded client -> server."""
        return self.stats.bytes_up

    @property
    def bytes_down(self) -> int:
        """Bytes forwarded server -> client."""
        return self.stats.bytes_down

    @property
    def errors(self) -> list[str]:
        """Unexpected errors reported by the proxy loop (should stay empty)."""
        return list(self._errors)

    # --------------------------------------------------------------------- modes

    def set_mode(
        self,
        mode: Mode | str,
        *,
        latency: float = 0.0,
        jitter: float = 0.0,
        limit: int = 0,
        direction: Direction = "both",
        rate: float = 0.0,
    ) -> None:
        """Switch mode; takes effect on live links before this returns.

        Args:
            mode: A :class:`Mode` or its string value.
            latency: Seconds added per direction (``latency`` and ``bandwidth``
                modes).
            jitter: Maximum random deviation from ``latency``, in seconds.
            limit: Bytes each link may still forward (``truncate`` mode).
            direction: Which direction(s) ``limit`` counts: ``up`` is client to
                server, ``down`` server to client.
            rate: Bytes per second per direction of each link (``bandwidth``
                and ``latency`` modes; 0 means no cap).

        Raises:
            ValueError: For an unknown mode or a negative parameter, or
                ``bandwidth`` mode without a positive ``rate``.
        """
        mode = Mode(mode)
        if latency < 0 or jitter < 0 or limit < 0 or rate < 0:
            raise ValueError("latency, jitter, limit and rate must be >= 0")
        if mode is Mode.BANDWIDTH and rate <= 0:
            raise ValueError("bandwidth mode needs a rate > 0")
        settings = _Settings(mode, latency, jitter, limit, direction, rate)
        self._call(lambda: self._apply(settings))

    def pass_through(self) -> None:
        """Forward everything unchanged (and release anything held)."""
        self.set_mode(Mode.PASS)

    def latency(
        self, seconds: float, jitter: float = 0.0, *, rate: float = 0.0
    ) -> None:
        """Delay each chunk by ``seconds`` (+- ``jitter``) in each direction;
        optionally also cap each direction at ``rate`` bytes per second."""
        self.set_mode(Mode.LATENCY, latency=seconds, jitter=jitter, rate=rate)

    def bandwidth(
        self, bytes_per_s: float, *, latency: float = 0.0, jitter: float = 0.0
    ) -> None:
        """Cap each direction of each link at ``bytes_per_s`` (plus optional latency)."""
        self.set_mode(Mode.BANDWIDTH, rate=bytes_per_s, latency=latency, jitter=jitter)

    def deaf(self) -> None:
        """Stop accepting: new connects complete in the kernel backlog and hang."""
        self.set_mode(Mode.DEAF)

    def blackhole(self) -> None:
        """Hold all bytes while keeping every socket open."""
        self.set_mode(Mode.BLACKHOLE)

    def reset(self) -> None:
        """RST every live link and every new connection."""
        self.set_mode(Mode.RESET)

    def refuse(self) -> None:
        """Accept new connections and RST them at once; live links keep working."""
        self.set_mode(Mode.REFUSE)

    def slow_accept(self) -> None:
        """Accept new connections but do not connect them upstream yet."""
        self.set_mode(Mode.SLOW_ACCEPT)

    def truncate_after(self, limit: int, direction: Direction = "both") -> None:
        """Close each link once ``limit`` more bytes have gone through it."""
        self.set_mode(Mode.TRUNCATE, limit=limit, direction=direction)

    def reset_all(self) -> int:
        """RST every live link now, without changing the mode.

        Returns:
            How many links were reset.
        """
        return self._call(self._reset_links)

    def wait_live(self, count: int, timeout: float = 2.0) -> None:
        """Poll until exactly ``count`` links are live.

        Args:
            count: Expected number of live links.
            timeout: Seconds to wait.

        Raises:
            TimeoutError: If the count is not reached in time.
        """
        deadline = time.monotonic() + timeout
        while (live := self.live) != count:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{live} live links, expected {count}")
            time.sleep(0.005)

    # ------------------------------------------------------------ thread helpers

    def _running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _call(
        self, factory: Callable[[], Coroutine[Any, Any, _T]], timeout: float = 5.0
    ) -> _T:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            raise RuntimeError("FaultProxy is not running")
        if threading.get_ident() == thread.ident:
            # Blocking on our own loop would deadlock.
            raise RuntimeError("FaultProxy API called from the proxy thread")
        # The coroutine is created only now, so an early error above cannot leave
        # a never-awaited coroutine behind (a RuntimeWarning, an error in tests).
        return asyncio.run_coroutine_threadsafe(factory(), loop).result(timeout)

    def _run_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            # Normally _close left nothing behind; this guards against a failed
            # close so the loop can be closed without "Task was destroyed" noise.
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def _halt_loop(self, timeout: float = 5.0) -> None:
        loop, thread = self._loop, self._thread
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # closed in between
                loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                raise RuntimeError("FaultProxy thread did not stop")
        self._thread = None
        self._loop = None

    def _on_loop_error(
        self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]
    ) -> None:
        self._errors.append(f"{context.get('message')}: {context.get('exception')!r}")
        loop.default_exception_handler(context)

    # ---------------------------------------------------- coroutines on the loop

    async def _open(self) -> None:
        self._changed = asyncio.Event()
        # A plain listening socket and our own accept callback, rather than
        # asyncio.start_server: ``deaf`` mode must stop accepting without
        # closing the listener, which asyncio.Server cannot do.
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self._host, 0))
            listener.listen(100)
            listener.setblocking(False)
        except BaseException:
            listener.close()
            raise
        self._listener = listener
        self._port = listener.getsockname()[1]
        self._listening(True)

    def _listening(self, on: bool) -> None:
        loop = asyncio.get_running_loop()
        listener = self._listener
        if listener is None or listener.fileno() < 0:
            return
        if on:
            loop.add_reader(listener, self._on_readable, listener)
        else:
            loop.remove_reader(listener)

    def _on_readable(self, listener: socket.socket) -> None:
        # Runs on the loop; the reader is removed in deaf mode, so this never
        # accepts then. Accept everything that is ready (a burst of connects).
        while True:
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. EMFILE: report, keep listening
                self._errors.append(f"accept failed: {exc!r}")
                return
            conn.setblocking(False)
            task = asyncio.get_running_loop().create_task(self._adopt(conn))
            self._adopting.add(task)
            task.add_done_callback(self._adopting.discard)

    async def _adopt(self, conn: socket.socket) -> None:
        try:
            reader, writer = await asyncio.open_connection(sock=conn)
        except BaseException:
            conn.close()
            raise
        self._on_accept(reader, writer)

    async def _close(self) -> None:
        self._closing = True
        self._listening(False)
        if self._listener is not None:
            # Connections still in the backlog (deaf mode) get an RST.
            self._listener.close()
        adopting = list(self._adopting)
        for task in adopting:
            task.cancel()
        await asyncio.gather(*adopting, return_exceptions=True)
        links = list(self._links)
        for link in links:
            link.close(rst=False)
        await self._finish(links)

    async def _snapshot_async(self) -> ProxyStats:
        return self._snapshot()

    def _snapshot(self) -> ProxyStats:
        return ProxyStats(
            accepted=self._accepted,
            rejected=self._rejected,
            live=len(self._links),
            upstream_connects=self._upstream_connects,
            bytes_up=self._bytes_up,
            bytes_down=self._bytes_down,
            truncated=self._truncated,
            last_truncated_at=self._last_truncated_at,
        )

    async def _apply(self, settings: _Settings) -> None:
        self._settings = settings
        if not self._closing:
            self._listening(settings.mode is not Mode.DEAF)
        budget = settings.limit if settings.mode is Mode.TRUNCATE else None
        for link in self._links:
            link.budget = budget
        self._notify()
        if settings.mode is Mode.RESET:
            await self._reset_links()

    async def _reset_links(self) -> int:
        links = list(self._links)
        for link in links:
            link.close(rst=True)
        await self._finish(links)
        return len(links)

    async def _finish(self, links: list[_Link]) -> None:
        tasks = [link.task for link in links if link.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _notify(self) -> None:
        # Wake everyone waiting for a state change; each waiter re-checks its own
        # condition, so a fresh Event per change is all the bookkeeping needed.
        assert self._changed is not None
        self._changed.set()
        self._changed = asyncio.Event()

    def _flowing(self) -> bool:
        return self._settings.mode is not Mode.BLACKHOLE

    async def _wait(self, ready: Callable[[], bool]) -> None:
        while not ready():
            assert self._changed is not None
            await self._changed.wait()

    def _on_accept(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._accepted += 1
        if self._closing or self._settings.mode in (Mode.REFUSE, Mode.RESET):
            self._rejected += 1
            _abort(writer, rst=True)
            return
        link = _Link(reader, writer)
        if self._settings.mode is Mode.TRUNCATE:
            link.budget = self._settings.limit
        self._links.add(link)
        link.task = asyncio.get_running_loop().create_task(self._serve(link))

    async def _serve(self, link: _Link) -> None:
        up_queue: asyncio.Queue[_Item] = asyncio.Queue()
        down_queue: asyncio.Queue[_Item] = asyncio.Queue()
        # Read the client from the start, even while held in slow_accept, so a
        # client that gives up is noticed and its bytes are kept in order.
        pumps = [asyncio.create_task(self._read(link, link.client_reader, up_queue))]
        rst = False
        try:
            await self._wait(
                lambda: self._settings.mode is not Mode.SLOW_ACCEPT or link.client_eof
            )
            if link.client_eof and self._settings.mode is Mode.SLOW_ACCEPT:
                return
            try:
                up_reader, up_writer = await asyncio.wait_for(
                    asyncio.open_connection(*self._upstream), self._connect_timeout
                )
            except (OSError, asyncio.TimeoutError):
                rst = True
                return
            link.upstream_writer = up_writer
            self._upstream_connects += 1
            pumps += [
                asyncio.create_task(self._read(link, up_reader, down_queue)),
                asyncio.create_task(self._write(link, up_queue, up_writer, up=True)),
                asyncio.create_task(
                    self._write(link, down_queue, link.client_writer, up=False)
                ),
            ]
            done, _ = await asyncio.wait(pumps, return_when=asyncio.FIRST_EXCEPTION)
            failures = [t.exception() for t in done if t.exception() is not None]
            # A reset or error on one side is passed on as a reset to the other;
            # a spent truncation budget is a clean close.
            rst = any(not isinstance(exc, _Truncated) for exc in failures)
            if failures and not rst:
                self._truncated += 1
                self._last_truncated_at = time.monotonic()
        finally:
            # Synchronous cleanup first: if this task is cancelled again while
            # awaiting below, the link is already closed and unregistered.
            link.close(rst=rst)
            self._links.discard(link)
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            for writer in link.writers():
                # Lets connection_lost run so sockets are really closed before
                # stop() returns (otherwise: ResourceWarning: unclosed transport).
                with contextlib.suppress(Exception):
                    await writer.wait_closed()

    async def _read(
        self,
        link: _Link,
        reader: asyncio.StreamReader,
        queue: asyncio.Queue[_Item],
    ) -> None:
        loop = asyncio.get_running_loop()
        last_due = 0.0
        while True:
            data = await reader.read(_CHUNK)
            if not data:
                if reader is link.client_reader:
                    link.client_eof = True
                    self._notify()
                queue.put_nowait(None)
                return
            settings = self._settings
            delay = 0.0
            if settings.delays:
                spread = self._rng.uniform(-settings.jitter, settings.jitter)
                delay = max(0.0, settings.latency + spread)
            # Never schedule a chunk before its predecessor: jitter must not
            # reorder a byte stream.
            last_due = max(loop.time() + delay, last_due)
            queue.put_nowait((last_due, data))

    async def _write(
        self,
        link: _Link,
        queue: asyncio.Queue[_Item],
        writer: asyncio.StreamWriter,
        *,
        up: bool,
    ) -> None:
        loop = asyncio.get_running_loop()
        paced_until = 0.0  # when the paced stream's last piece is paid for
        while True:
            item = await queue.get()
            await self._wait(self._flowing)
            if item is None:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            due, data = item
            if (delay := due - loop.time()) > 0:
                await asyncio.sleep(delay)
                await self._wait(self._flowing)
            truncated = False
            if link.budget is not None and self._settings.direction in (
                "both",
                "up" if up else "down",
            ):
                if len(data) >= link.budget:
                    data, truncated = data[: link.budget], True
                link.budget -= len(data)
            while data:
                settings = self._settings
                piece = data
                if settings.paced:
                    piece = data[: max(1, int(settings.rate * _PACE_SLICE))]
                data = data[len(piece) :]
                writer.write(piece)
                await writer.drain()
                if up:
                    self._bytes_up += len(piece)
                else:
                    self._bytes_down += len(piece)
                if settings.paced:
                    # The cap is per direction: this writer alone waits. The
                    # wait runs to a schedule, so late wake-ups do not add up.
                    now = loop.time()
                    if paced_until < now - _PACE_CATCH_UP:
                        paced_until = now  # idle a while: no credit saved up
                    paced_until += len(piece) / settings.rate
                    await asyncio.sleep(max(0.0, paced_until - now))
                    await self._wait(self._flowing)
            if truncated:
                raise _Truncated
