"""Network and server probes for ``poolkeeper check``.

Each probe measures one layer (name resolution, TCP, TLS, the driver's
connect and queries) and returns what it saw or raises what went wrong; the
``check`` command turns that into steps with fix hints.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import statistics
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from poolkeeper.cli._common import Target, now
from poolkeeper.drivers.base import TxStatus

#: PostgreSQL's SSLRequest code (protocol 1234.5679).
_PG_SSL_REQUEST = struct.pack("!ii", 8, 80877103)


def resolve(host: str, port: int) -> tuple[list[str], float]:
    """Resolve ``host`` and return its distinct addresses and the time taken."""
    start = now()
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    elapsed = now() - start
    addresses: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in addresses:
            addresses.append(address)
    return addresses, elapsed


def tcp_connect(host: str, port: int, timeout: float) -> float:
    """Open and close one TCP connection; return the connect time in seconds."""
    start = now()
    with socket.create_connection((host, port), timeout=timeout):
        return now() - start


@dataclass(frozen=True)
class TlsInfo:
    """What the server said to PostgreSQL's SSLRequest, and the handshake result."""

    offered: bool
    version: str | None = None
    cipher: str | None = None
    handshake_s: float | None = None
    verify_error: str | None = None


def pg_tls(host: str, port: int, timeout: float, *, verify: bool) -> TlsInfo:
    """Ask a PostgreSQL server for TLS and, if it agrees, complete a handshake.

    Args:
        host: Server host name or address.
        port: Server port.
        timeout: Socket timeout in seconds.
        verify: Whether to verify the certificate chain and host name (as
            ``sslmode=verify-full`` would).
    """
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(_PG_SSL_REQUEST)
        answer = sock.recv(1)
        if answer != b"S":
            return TlsInfo(offered=False)
        context = ssl.create_default_context()
        if not verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        start = now()
        try:
            with context.wrap_socket(sock, server_hostname=host) as tls:
                cipher = tls.cipher()
                return TlsInfo(
                    offered=True,
                    version=tls.version(),
                    cipher=cipher[0] if cipher else None,
                    handshake_s=now() - start,
                )
        except ssl.SSLCertVerificationError as exc:
            return TlsInfo(offered=True, verify_error=exc.verify_message or str(exc))


@dataclass
class ServerProbe:
    """What one connection to the server showed.

    Attributes:
        connect_s: Time the driver took to connect (TCP, TLS, auth, startup).
        rows: The rows of each query, in order (empty when a query failed).
        round_trips: Duration of each ``SELECT 1`` round trip, in seconds.
    """

    connect_s: float
    rows: list[list[tuple[Any, ...]]] = field(default_factory=list)
    round_trips: list[float] = field(default_factory=list)

    @property
    def rtt_median(self) -> float:
        """Median round trip in seconds (0.0 without samples)."""
        return statistics.median(self.round_trips) if self.round_trips else 0.0


def probe_server(
    target: Target, queries: Sequence[str], round_trips: int
) -> ServerProbe:
    """Connect with the URL's own driver, run ``queries``, then time round trips.

    Raises:
        Exception: Whatever the driver raised while connecting.
    """
    from poolkeeper.drivers import driver_for_url

    driver: Any = driver_for_url(target.url, {}, is_async=target.is_async)
    if target.is_async:
        return asyncio.run(_probe_async(driver, queries, round_trips))
    start = now()
    conn = driver.connect()
    probe = ServerProbe(now() - start)
    try:
        for query in queries:
            cursor = conn.cursor()
            try:
                cursor.execute(query)
                probe.rows.append([tuple(r) for r in cursor.fetchall()])
            except Exception:
                probe.rows.append([])
                driver.rollback(conn)
            finally:
                cursor.close()
        for _ in range(round_trips):
            start = now()
            cursor = conn.cursor()
            cursor.execute("SELECT 1")
            cursor.fetchall()
            cursor.close()
            probe.round_trips.append(now() - start)
        driver.rollback(conn)
    finally:
        driver.close(conn)
    return probe


async def _probe_async(
    driver: Any, queries: Sequence[str], round_trips: int
) -> ServerProbe:
    from poolkeeper.cli._server import _fetch_one

    start = now()
    conn = await driver.connect()
    probe = ServerProbe(now() - start)
    try:
        for query in queries:
            try:
                probe.rows.append(await _fetch_one(driver.name, conn, query))
            except Exception:
                probe.rows.append([])
                if driver.transaction_status(conn) is not TxStatus.IDLE:
                    await driver.rollback(conn)
        for _ in range(round_trips):
            start = now()
            await _fetch_one(driver.name, conn, "SELECT 1")
            probe.round_trips.append(now() - start)
    finally:
        await driver.close(conn)
    return probe
