"""Helpers shared by the adapters: URL query conversion and socket options.

Nothing here imports a database library, so every adapter can use it.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from poolkeeper.errors import ConfigError

#: Seconds a new connection may take before the attempt fails. Used by every
#: network driver unless the URL or ``connect_args`` says otherwise.
DEFAULT_CONNECT_TIMEOUT = 10

#: TCP keepalive defaults, as the article recommends for libpq: probe an idle
#: connection after 30 s, every 10 s, and give up after 3 missed probes. A
#: firewall or NAT that silently drops idle flows is then noticed in about a
#: minute instead of the operating system's default of two hours.
KEEPALIVE_IDLE = 30
KEEPALIVE_INTERVAL = 10
KEEPALIVE_COUNT = 3

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})

Converter = Callable[[str], Any]


def to_bool(value: str) -> bool:
    """Convert a URL query value such as ``true``/``0``/``on`` to a bool.

    Raises:
        ValueError: the value is not one of the usual spellings.
    """
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"expected one of {sorted(_TRUE | _FALSE)}, got {value!r}")


def to_number(value: str) -> int | float:
    """Convert a URL query value to an int when it is integral, else a float."""
    number = float(value)
    return int(number) if number.is_integer() and "." not in value else number


def convert_query(
    scheme: str,
    query: Mapping[str, str],
    converters: Mapping[str, Converter],
) -> dict[str, Any]:
    """Convert URL query parameters with a per-parameter converter table.

    Args:
        scheme: The URL scheme, for error messages.
        query: The raw query parameters (all strings).
        converters: Supported parameter name -> function turning the string
            into the value the driver expects (``str`` keeps it as is).

    Returns:
        The converted parameters.

    Raises:
        ConfigError: a parameter is not supported by this driver (the message
            lists the supported ones) or its value cannot be converted.
    """
    result: dict[str, Any] = {}
    for key, raw in query.items():
        convert = converters.get(key)
        if convert is None:
            raise ConfigError(
                f"{scheme}:// does not support the URL parameter {key!r}; supported: "
                + ", ".join(sorted(converters))
                + " (other driver arguments go in connect_args)"
            )
        try:
            result[key] = convert(raw)
        except ValueError as exc:
            raise ConfigError(
                f"{scheme}:// URL parameter {key}={raw!r} is not valid: {exc}"
            ) from None
    return result


def set_tcp_keepalive(
    sock: socket.socket,
    *,
    idle: int = KEEPALIVE_IDLE,
    interval: int = KEEPALIVE_INTERVAL,
    count: int = KEEPALIVE_COUNT,
) -> None:
    """Turn TCP keepalive probes on for ``sock`` with the given timings.

    Unix-domain sockets are left alone, and options the platform lacks are
    skipped (``TCP_KEEPIDLE`` is Linux; macOS calls it ``TCP_KEEPALIVE``), so
    this never fails: keepalive tuning is a best effort, not a requirement.
    """
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        idle_opt = getattr(socket, "TCP_KEEPIDLE", None) or getattr(
            socket, "TCP_KEEPALIVE", None
        )
        for option, value in (
            (idle_opt, idle),
            (getattr(socket, "TCP_KEEPINTVL", None), interval),
            (getattr(socket, "TCP_KEEPCNT", None), count),
        ):
            if option is not None:
                sock.setsockopt(socket.IPPROTO_TCP, option, value)


def set_tcp_keepalive_fd(fd: int, **timings: int) -> None:
    """Like :func:`set_tcp_keepalive` for a raw file descriptor (C drivers).

    The descriptor is duplicated so that closing the temporary Python socket
    object does not close the driver's connection; socket options live on the
    shared socket, so they apply to the original descriptor too.
    """
    with contextlib.suppress(OSError):
        dup = socket.socket(fileno=os.dup(fd))
        try:
            set_tcp_keepalive(dup, **timings)
        finally:
            dup.close()


#: URL/``connect_args`` keys poolkeeper itself consumes to tune keepalive on
#: drivers that have no option of their own (asyncpg and the MySQL drivers).
KEEPALIVE_PARAMS: dict[str, Converter] = {
    "keepalives": to_bool,
    "keepalives_idle": int,
    "keepalives_interval": int,
    "keepalives_count": int,
}


@dataclass(frozen=True)
class Keepalive:
    """TCP keepalive settings applied to a socket after the driver connects."""

    enabled: bool = True
    idle: int = KEEPALIVE_IDLE
    interval: int = KEEPALIVE_INTERVAL
    count: int = KEEPALIVE_COUNT

    @classmethod
    def pop_from(cls, kwargs: dict[str, Any]) -> Keepalive:
        """Remove the ``keepalives*`` keys from ``kwargs`` and return the settings."""
        return cls(
            enabled=bool(kwargs.pop("keepalives", True)),
            idle=int(kwargs.pop("keepalives_idle", KEEPALIVE_IDLE)),
            interval=int(kwargs.pop("keepalives_interval", KEEPALIVE_INTERVAL)),
            count=int(kwargs.pop("keepalives_count", KEEPALIVE_COUNT)),
        )

    def apply(self, sock: socket.socket | None) -> None:
        """Tune ``sock`` (no-op when disabled, missing, or not TCP)."""
        if self.enabled and sock is not None:
            set_tcp_keepalive(
                sock, idle=self.idle, interval=self.interval, count=self.count
            )

    def apply_fd(self, fd: int) -> None:
        """Tune the socket behind a raw file descriptor (see :func:`set_tcp_keepalive_fd`)."""
        if self.enabled and fd >= 0:
            set_tcp_keepalive_fd(
                fd, idle=self.idle, interval=self.interval, count=self.count
            )


def present(**values: Any) -> dict[str, Any]:
    """Return the keyword arguments whose value is not None."""
    return {key: value for key, value in values.items() if value is not None}


def has_pending_input(fd: int) -> bool:
    """Tell whether a connection's socket has something to read while at rest.

    A request/response protocol sends nothing unsolicited to a connection that
    is not running a query, so anything readable (end of file after a server
    side kill, an error packet before the server hangs up, leftover rows) means
    the connection is dead or out of sync. A zero-timeout poll is a local
    system call, not a round trip to the server.
    """
    if fd < 0:
        return True
    try:
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP)
            return bool(poller.poll(0))
        readable, _, errored = select.select([fd], [], [fd], 0)
        return bool(readable or errored)
    except (OSError, ValueError):
        return True
