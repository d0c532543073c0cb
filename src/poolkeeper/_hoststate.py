"""Per-host state of one pool: where its connections go, and what we know of each server.

Owns: :class:`HostState` (one server a pool connects to: its address, the
role it last reported, its open connections, since when it is suspect) and
:class:`HostTable` (a pool's hosts, keyed by address). Pure data: no I/O, no
lock of its own (the pool's lock guards it), no import of the pool.

May not touch: the pool's checkout or connect paths; they call into this
module, never the reverse. Reading a connection's host and role is
:func:`poolkeeper.drivers._hosts.host_of`; matching a role against
``target_session_attrs`` is :func:`~poolkeeper.drivers._hosts.role_matches`.

How a pool uses it (failover inside one pool, docs/CLUSTERS.md):

1. the shell records each new connection's host and role here
   (:meth:`HostTable.connected`, from ``host_of``; no I/O) and the connection's
   ``PoolEntry.host`` points at its :class:`HostState`;
2. a broken connection, a failover SQLSTATE (25006, 57P01-57P03) or a role
   that no longer fits ``target_session_attrs`` makes that host suspect
   (``PoolState.suspect_host``): its connections last known good before then
   have their role read before their next checkout (``needs_role_check``),
   and are retired (``role_changed``) if it no longer fits;
3. ``role_check_interval`` makes every host suspect once per interval
   (:meth:`HostTable.suspect_all`, from the housekeeping round).

Not done yet: the connect loop does not prefer hosts by what this table
knows, and there is no per-host backoff (libpq's host order, or the host
loop in ``drivers/_hosts.py``, decide where a new connection goes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

#: ``(host, port)`` as the driver reports it (None parts: the driver's defaults).
HostPort = tuple[str | None, int | None]


class Reached(Protocol):
    """Where a new connection went (a :class:`~poolkeeper.drivers._hosts.HostInfo`)."""

    @property
    def host(self) -> str | None: ...
    @property
    def port(self) -> int | None: ...
    @property
    def role(self) -> str: ...


@dataclass
class HostState:
    """What a pool knows of one server."""

    address: HostPort
    """``(host, port)`` as the driver reports it (None parts: its defaults)."""
    role: str = "unknown"
    """The role its newest connection reported."""
    connections: int = 0
    """Connections opened to it and not yet closed."""
    suspect_before: float = -math.inf
    """Monotonic time: its connections checked before this are pinged first."""


@dataclass
class HostTable:
    """A pool's hosts, keyed by address (guarded by the pool's lock)."""

    hosts: dict[HostPort, HostState] = field(default_factory=dict)

    def state_of(self, address: HostPort) -> HostState:
        """Return the state of ``address``, creating it on first sight."""
        state = self.hosts.get(address)
        if state is None:
            state = self.hosts[address] = HostState(address)
        return state

    def connected(self, info: Reached) -> HostState:
        """Record a new connection to ``info``'s server, with the role it reported."""
        state = self.state_of((info.host, info.port))
        state.role = info.role
        state.connections += 1
        return state

    def closed(self, address: HostPort) -> None:
        """Record that a connection to ``address`` was closed."""
        state = self.hosts.get(address)
        if state is not None and state.connections > 0:
            state.connections -= 1

    def suspect(self, address: HostPort, now: float) -> None:
        """Make the idle connections to ``address`` suspect (a sibling broke at ``now``)."""
        self.state_of(address).suspect_before = now

    def suspect_all(self, now: float) -> None:
        """Make every host suspect at ``now`` (a periodic role check is due)."""
        for state in self.hosts.values():
            state.suspect_before = now

    def connections_by_host(self) -> dict[str, int]:
        """Open connections per host, keyed ``"host:port"`` (hosts with none left out)."""
        return {
            f"{host or '(default)'}:{port if port is not None else '(default)'}": (
                state.connections
            )
            for (host, port), state in self.hosts.items()
            if state.connections
        }
