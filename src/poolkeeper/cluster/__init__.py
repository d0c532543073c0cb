"""PostgreSQL clusters: where a connection went, and read/write routing.

- :func:`host_of` says which host and port a connection reached and whether
  that server is a primary, a standby or a read-only primary (no I/O).
- :class:`Cluster` / :class:`AsyncCluster` hold a pool per member and send
  writes to the primary and reads to replicas (see docs/CLUSTERS.md).
"""

from poolkeeper.cluster._async import AsyncCluster
from poolkeeper.cluster._events import (
    CLUSTER_EVENT_KINDS,
    ClusterEvent,
    ClusterListener,
)
from poolkeeper.cluster._routing import ClusterStats, MemberStats
from poolkeeper.cluster._sync import Cluster
from poolkeeper.drivers._hosts import HostInfo, NoMatchingHost, Role, host_of

__all__ = [
    "CLUSTER_EVENT_KINDS",
    "AsyncCluster",
    "Cluster",
    "ClusterEvent",
    "ClusterListener",
    "ClusterStats",
    "HostInfo",
    "MemberStats",
    "NoMatchingHost",
    "Role",
    "host_of",
]
