"""What the exporters read from a cluster object: one row per member, and the totals.

A cluster's membership and roles change at run time (a failover, Patroni adding
a member), so exporters read :meth:`~poolkeeper.Cluster.stats` at collection
time instead of registering each member pool: a member that appears is
reported from the next collection on, and one that is gone stops being
reported.

Labels: ``member`` is ``HOST:PORT``; ``role`` is the role last observed
(``primary``, ``standby``, ``read-only``, ``unknown``). Counters carry the
member but not the role: a counter whose series changed with each failover
would look reset to ``rate()``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Protocol

from poolkeeper.cluster._routing import ClusterStats
from poolkeeper.errors import ConfigError

#: How each checkout was routed, for the ``route`` label.
ROUTES = ("write", "read", "read_fallback")


class ObservableCluster(Protocol):
    """What an exporter needs from :class:`~poolkeeper.Cluster` or ``AsyncCluster``."""

    name: str

    def stats(self) -> ClusterStats:
        """Return a snapshot of the members and the routing counters."""
        ...


@dataclass(frozen=True)
class MemberRow:
    """One member's numbers, with its labels."""

    member: str
    role: str
    up: int
    lag: float | None
    idle: int
    used: int
    waiting: int
    checkouts: int
    connect_errors: int
    timeouts: int


def member_label(host: str | None, port: int | None) -> str:
    """``HOST:PORT`` (an IPv6 address in brackets), the ``member`` label."""
    shown = f"[{host}]" if host is not None and ":" in host else str(host)
    return f"{shown}:{port}"


def member_rows(stats: ClusterStats) -> list[MemberRow]:
    """One :class:`MemberRow` per member of a snapshot."""
    rows = []
    for m in stats.members:
        pool: Any = m.pool
        rows.append(
            MemberRow(
                member_label(m.host, m.port),
                m.role if m.healthy else "unknown",
                int(m.healthy),
                m.lag if m.healthy else None,
                pool.idle,
                pool.in_use,
                pool.waiting,
                m.checkouts,
                pool.connect_errors,
                pool.timeouts,
            )
        )
    return rows


def routes(stats: ClusterStats) -> dict[str, int]:
    """Checkouts by route: ``write``, ``read`` (a replica), ``read_fallback``."""
    return {
        "write": stats.writes,
        "read": stats.reads,
        "read_fallback": stats.read_fallbacks,
    }


class Clusters:
    """The clusters one exporter reports, by name (two with one name are refused)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clusters: list[ObservableCluster] = []

    def add(self, cluster: ObservableCluster, where: str) -> None:
        """Report ``cluster`` from the next collection on.

        Raises:
            ConfigError: it, or another cluster of its name, is already reported.
        """
        with self._lock:
            for other in self._clusters:
                if other is cluster or other.name == cluster.name:
                    raise ConfigError(
                        f"a cluster named {cluster.name!r} is already registered on "
                        f"{where}; give each cluster a distinct name="
                    )
            self._clusters.append(cluster)

    def remove(self, cluster: ObservableCluster) -> bool:
        """Stop reporting ``cluster``; return whether clusters remain."""
        with self._lock:
            if cluster in self._clusters:
                self._clusters.remove(cluster)
            return bool(self._clusters)

    def snapshots(self) -> list[tuple[str, ClusterStats]]:
        """Each reported cluster's name and a fresh ``stats()``."""
        with self._lock:
            clusters = list(self._clusters)
        return [(c.name, c.stats()) for c in clusters]
