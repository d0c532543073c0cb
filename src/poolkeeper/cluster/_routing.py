"""The decisions of a cluster object, shared by :class:`Cluster` and :class:`AsyncCluster`.

No I/O here. The shells observe the members (a probe query through each
member's pool, and Patroni's ``GET /cluster`` when configured), hand the
observations to :meth:`Router.observe`, create and close pools as it says,
and ask :meth:`Router.pick` where each checkout goes:

- writes (``readonly=False``) go to the one member whose role is ``primary``;
- reads go to a healthy standby whose replay lag is at most ``max_lag``
  seconds: the one with the fewest connections checked out through the
  cluster, ties broken round robin; when none qualifies, to the primary if
  ``fallback_to_primary``.

A member that failed its last probe is unhealthy and gets no reads; a primary
that failed stays the write target until an observation names another one,
so that writers see the driver's error rather than a routing error while a
failover has not been seen yet. With Patroni, the leader its view names
becomes the write target at once (:meth:`Router.lead`), before any probe.
A write target whose last probe found it a standby (back after a failover
before the new leader was seen) gets no writes: :meth:`Router.pick` returns
None and the shell waits for the routing to change, within the caller's
timeout.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from poolkeeper.cluster._events import Change
from poolkeeper.drivers._hosts import HostPort, Role


@dataclass(frozen=True)
class Observation:
    """What one refresh learned about one member."""

    host: str | None
    port: int | None
    role: Role
    """As :func:`~poolkeeper.cluster.host_of` says; ``unknown`` if unreachable."""
    lag: float | None = None
    """Replay lag in seconds (0 on a primary; None: unknown)."""
    healthy: bool = True
    """False when the member could not be probed."""
    name: str | None = None
    """The member's name in Patroni, if it came from there."""


@dataclass(frozen=True)
class MemberStats:
    """A member of a cluster: where it is, what it is, and its pool's numbers."""

    host: str | None
    port: int | None
    role: Role
    lag: float | None
    healthy: bool
    checkouts: int
    """Connections handed out from this member by the cluster."""
    pool: Any
    """The member pool's :class:`~poolkeeper.PoolStats`."""
    name: str | None = None


@dataclass(frozen=True)
class ClusterStats:
    """A snapshot of a cluster object: members, and checkouts per role."""

    members: tuple[MemberStats, ...]
    primary: HostPort | None
    """Where writes go now."""
    writes: int
    """Checkouts with ``readonly=False``."""
    reads: int
    """Checkouts with ``readonly=True`` served by a replica."""
    read_fallbacks: int
    """Checkouts with ``readonly=True`` served by the primary (no replica qualified)."""
    refreshes: int
    refresh_errors: int
    primary_changes: int
    """Times the write target moved to another member."""


@dataclass
class _Member:
    host: str | None
    port: int | None
    pool: Any
    role: Role = "unknown"
    lag: float | None = None
    healthy: bool = False
    checkouts: int = 0
    name: str | None = None
    held: int = 0
    """Connections of this member checked out through the cluster right now."""


@dataclass
class Router:
    """Member table and routing choices (see the module docstring).

    Args:
        max_lag: Seconds of replay lag beyond which a replica gets no reads
            (None: no limit).
        fallback_to_primary: Send reads to the primary when no replica qualifies
            (else :meth:`pick` returns None and the shell raises).
    """

    max_lag: float | None = None
    fallback_to_primary: bool = True
    members: dict[HostPort, _Member] = field(default_factory=dict)
    primary: HostPort | None = None
    leader: HostPort | None = None
    """The leader Patroni's last view named (None: no Patroni, or no leader)."""
    _turn: Iterator[int] = field(default_factory=itertools.count)
    writes: int = 0
    reads: int = 0
    read_fallbacks: int = 0
    refreshes: int = 0
    refresh_errors: int = 0
    primary_changes: int = 0
    changes: list[Change] = field(default_factory=list)
    """Events not yet delivered (see :meth:`take_changes`)."""

    def add(self, hostport: HostPort, pool: Any) -> None:
        """Record a member and the pool the shell built for it."""
        self.members[hostport] = _Member(hostport[0], hostport[1], pool)
        self.changes.append(("member_added", hostport, "unknown", None))

    def take_changes(self) -> list[Change]:
        """Return the events recorded since the last call, and forget them."""
        changes, self.changes = self.changes, []
        return changes

    def missing(self, hostports: Iterable[HostPort]) -> list[HostPort]:
        """Return the members named that have no pool yet."""
        return [hp for hp in hostports if hp not in self.members]

    def lead(self, leader: HostPort | None) -> None:
        """Make the leader a Patroni view names the write target (before any probe)."""
        self.leader = leader
        if leader is not None and leader in self.members and leader != self.primary:
            self._move_primary(leader)

    def _move_primary(self, primary: HostPort) -> None:
        if self.primary is not None:
            self.primary_changes += 1
        self.changes.append(("primary_change", primary, "primary", self.primary))
        self.primary = primary

    def observe(
        self, observations: Iterable[Observation], *, complete: bool
    ) -> list[Any]:
        """Apply one refresh; return the pools of members that are gone.

        Args:
            observations: One per member seen (members must already be added).
            complete: The list is the whole membership (Patroni): members not
                in it are dropped.
        """
        self.refreshes += 1
        seen: set[HostPort] = set()
        primary: HostPort | None = None
        for obs in observations:
            key = (obs.host, obs.port)
            member = self.members[key]
            seen.add(key)
            if obs.healthy != member.healthy:
                kind = "member_up" if obs.healthy else "member_down"
                self.changes.append((kind, key, obs.role, None))
            member.role, member.lag, member.healthy = obs.role, obs.lag, obs.healthy
            member.name = obs.name or member.name
            if obs.healthy and obs.role == "primary":
                primary = key
            if not obs.healthy:
                self.refresh_errors += 1
        if primary is not None and primary != self.primary:
            self._move_primary(primary)
        gone = [hp for hp in self.members if complete and hp not in seen]
        if self.primary in gone:
            self.primary = None
        for hp in gone:
            self.changes.append(("member_removed", hp, self.members[hp].role, None))
        return [self.members.pop(hp).pool for hp in gone]

    def pick(self, readonly: bool, busy: Callable[[Any], int] | None = None) -> Any:
        """Return the pool a checkout should use, or None when no member qualifies.

        Args:
            readonly: The caller only reads.
            busy: Connections in use in a pool; by default the connections
                checked out through the cluster (:meth:`checked_out` minus
                :meth:`checked_in`), which costs nothing to read, unlike a
                pool's ``stats()`` (it copies and sorts its time samples).
        """
        if busy is None:
            held = {id(m.pool): m.held for m in self.members.values()}
            busy = lambda pool: held[id(pool)]  # noqa: E731
        if readonly:
            replicas = [
                m
                for m in self.members.values()
                if m.healthy
                and m.role == "standby"
                and (
                    self.max_lag is None
                    or (m.lag is not None and m.lag <= self.max_lag)
                )
            ]
            if replicas:
                fewest = min(busy(m.pool) for m in replicas)
                idle = [m for m in replicas if busy(m.pool) == fewest]
                return idle[next(self._turn) % len(idle)].pool
            if not self.fallback_to_primary:
                return None
        if self.primary is None:
            return None
        member = self.members[self.primary]
        if (
            not readonly
            and member.healthy
            and member.role in ("standby", "read-only")
            and self.primary != self.leader
        ):
            return None  # a known standby: wait for the new primary
        return member.pool

    def writable_soon(self) -> bool:
        """Whether a write that :meth:`pick` has no pool for should wait.

        True when a primary was seen and only its role is in doubt (a failover
        under way), False when the cluster never had one.
        """
        return self.primary is not None

    def checked_out(self, pool: Any, readonly: bool) -> None:
        """Count a checkout :meth:`pick` chose, once the pool handed it out."""
        for key, member in self.members.items():
            if member.pool is pool:
                member.checkouts += 1
                member.held += 1
                if not readonly:
                    self.writes += 1
                elif key == self.primary or member.role != "standby":
                    self.read_fallbacks += 1
                    self.changes.append(("read_fallback", key, member.role, None))
                else:
                    self.reads += 1
                return

    def checked_in(self, pool: Any) -> None:
        """Count the return of a connection counted by :meth:`checked_out`."""
        for member in self.members.values():
            if member.pool is pool:
                member.held -= 1
                return

    def describe(self) -> str:
        """One line naming every member and its role, for error messages."""
        return (
            ", ".join(
                f"{m.host}:{m.port} {m.role if m.healthy else 'unreachable'}"
                for m in self.members.values()
            )
            or "no members"
        )

    def stats(self, pool_stats: Callable[[Any], Any]) -> ClusterStats:
        """Build a :class:`ClusterStats` snapshot."""
        return ClusterStats(
            members=tuple(
                MemberStats(
                    m.host,
                    m.port,
                    m.role,
                    m.lag,
                    m.healthy,
                    m.checkouts,
                    pool_stats(m.pool),
                    m.name,
                )
                for m in self.members.values()
            ),
            primary=self.primary,
            writes=self.writes,
            reads=self.reads,
            read_fallbacks=self.read_fallbacks,
            refreshes=self.refreshes,
            refresh_errors=self.refresh_errors,
            primary_changes=self.primary_changes,
        )
