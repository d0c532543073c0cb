"""Fork safety: a forked child never uses or closes its parent's connections.

Pools register themselves when they open. In a child process, right after
``os.fork()``, every registered pool forgets its connections and starts empty.
The inherited connection objects are kept alive for the life of the child
(their finalizers would otherwise send the server a goodbye that ends the
parent's sessions), and their sockets are redirected to /dev/null so that
nothing the child does can reach the parent's server sessions.
"""

from __future__ import annotations

import contextlib
import os
import weakref
from collections.abc import Callable
from typing import Any, Protocol


class _Forkable(Protocol):
    def _after_fork(self) -> None: ...


_pools: weakref.WeakSet[Any] = weakref.WeakSet()
#: Connections inherited from the parent, kept alive on purpose (see module doc).
_quarantined: list[Any] = []


def register(pool: _Forkable) -> None:
    """Reset ``pool`` in any child forked from now on."""
    _pools.add(pool)


def _socket_fd(conn: Any) -> int | None:
    """Find the socket file descriptor of a driver connection, if it has one."""
    candidates: tuple[Callable[[], Any], ...] = (
        lambda: conn.pgconn.socket,  # psycopg 3
        lambda: conn.fileno(),  # psycopg2, aiopg, mysqlclient
        lambda: conn._sock.fileno(),  # PyMySQL
        lambda: conn._transport.get_extra_info("socket").fileno(),  # asyncpg
        lambda: conn._writer.transport.get_extra_info("socket").fileno(),  # aiomysql
    )
    for candidate in candidates:
        with contextlib.suppress(Exception):
            fd = candidate()
            if isinstance(fd, int) and fd >= 0:
                return fd
    return None


def quarantine(conns: list[Any]) -> None:
    """Make inherited connections harmless in this (child) process."""
    if not conns:
        return
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        for conn in conns:
            fd = _socket_fd(conn)
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.dup2(devnull, fd)
            _quarantined.append(conn)
    finally:
        os.close(devnull)


def _after_fork_in_child() -> None:
    for pool in list(_pools):
        with contextlib.suppress(Exception):
            pool._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
