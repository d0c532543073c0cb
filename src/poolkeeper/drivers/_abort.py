"""Socket helpers behind ``query_timeout``: how long a socket has been quiet, and abort.

The pool's query watchdog (see :mod:`poolkeeper.drivers.base`) runs in the
housekeeper, in another thread or task than the caller whose command hangs.
It must neither do I/O on the driver connection nor wait for the server, so
everything here is a local system call on the connection's socket:

- :func:`quiet_seconds`: seconds since data last moved on a TCP socket, in
  either direction (Linux ``TCP_INFO``: ``tcpi_last_data_sent`` and
  ``tcpi_last_data_recv``). Pure ACKs and keepalive probes are not data, so a
  frozen server whose kernel still ACKs looks quiet, while a result set that
  is still arriving does not. A command sends data, so the quiet time never
  exceeds the age of the command in progress.
- :func:`shutdown_fd`: ``shutdown(SHUT_RDWR)`` on the socket behind a file
  descriptor, which wakes a thread blocked in ``recv``/``poll`` on it with
  end-of-file, so the driver raises its "connection lost" error at once. The
  descriptor is duplicated first and the driver is asked again whether it
  still owns that descriptor, so a number closed and reused meanwhile (by
  another connection) is never shut down.
- :func:`socket_probes`: both of the above as a driver adapter's ``quiet``
  and ``abort``, given how to find a connection's descriptor.

Nothing here imports a database library.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from collections.abc import Callable
from typing import Any

#: ``struct tcp_info`` offsets (linux/tcp.h, unchanged since Linux 2.6) of
#: ``tcpi_last_data_sent`` and ``tcpi_last_data_recv``, in milliseconds.
_LAST_DATA_SENT = 44
_LAST_DATA_RECV = 52
_TCP_INFO_LEN = 104
_TCP_INFO = getattr(socket, "TCP_INFO", None)


def quiet_seconds(fd: int) -> float | None:
    """Return the seconds since data last moved on the TCP socket ``fd``.

    Returns None when that cannot be told: not Linux, not a TCP socket (a
    Unix-domain socket), or ``fd`` is not open.
    """
    if _TCP_INFO is None or fd < 0:
        return None
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        return None
    try:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return None
        info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _TCP_INFO_LEN)
    except OSError:
        return None
    finally:
        sock.close()
    if len(info) < _LAST_DATA_RECV + 4:
        return None
    sent: int = struct.unpack_from("I", info, _LAST_DATA_SENT)[0]
    received: int = struct.unpack_from("I", info, _LAST_DATA_RECV)[0]
    return min(sent, received) / 1000.0


def shutdown_fd(fd: int, still_owned: Callable[[], bool]) -> bool:
    """Shut down both directions of the socket behind ``fd``.

    Args:
        fd: The driver connection's socket descriptor.
        still_owned: Asked after ``fd`` was duplicated: True if the driver
            connection is still open on that same descriptor.

    Returns:
        True if the socket was shut down.
    """
    if fd < 0:
        return False
    try:
        dup = os.dup(fd)
    except OSError:
        return False
    try:
        # The duplicate pins the socket: if the connection still owns fd
        # now, fd (and so the duplicate) is the connection's socket.
        if not still_owned():
            return False
        sock = socket.socket(fileno=dup)
        dup = -1
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            return False
        finally:
            sock.close()
        return True
    finally:
        if dup >= 0:
            with contextlib.suppress(OSError):
                os.close(dup)


def socket_probes(
    fd_of: Callable[[Any], int], is_open: Callable[[Any], bool]
) -> tuple[Callable[[Any], float | None], Callable[[Any], None]]:
    """Return an adapter's ``quiet`` and ``abort`` for connections on one socket.

    Args:
        fd_of: The connection's socket descriptor, or -1 when it has none
            (closed); it must not raise.
        is_open: Whether the connection is still open (asked, after the
            descriptor was pinned, together with ``fd_of`` again).
    """

    def quiet(conn: Any) -> float | None:
        """Seconds since data last moved on the connection's socket (None: unknown)."""
        return quiet_seconds(fd_of(conn))

    def abort(conn: Any) -> None:
        """Cut the connection off at once so a blocked call fails (``query_timeout``)."""
        fd = fd_of(conn)
        shutdown_fd(fd, lambda: is_open(conn) and fd_of(conn) == fd)

    return quiet, abort
