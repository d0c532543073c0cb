"""OpenTelemetry instruments for cluster objects (see :func:`instrument_cluster`).

Observable instruments only, read from :meth:`~poolkeeper.Cluster.stats` once
per cluster per collection; attributes ``poolkeeper.cluster.name``,
``poolkeeper.cluster.member`` (``HOST:PORT``) and, on the gauges,
``poolkeeper.cluster.member.role``.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

from opentelemetry import metrics

from poolkeeper.metrics._cluster import (
    Clusters,
    MemberRow,
    ObservableCluster,
    member_rows,
    routes,
)

CLUSTER = "poolkeeper.cluster.name"
MEMBER = "poolkeeper.cluster.member"
ROLE = "poolkeeper.cluster.member.role"
STATE = "db.client.connection.state"
ROUTE = "poolkeeper.cluster.route"

#: Seconds one ``stats()`` snapshot serves the callbacks of one collection.
_SNAPSHOT_TTL = 0.25


class _ClusterInstruments:
    """The instruments of one meter provider, shared by every cluster on it."""

    def __init__(self, provider: metrics.MeterProvider) -> None:
        from poolkeeper import __version__

        self.clusters = Clusters()
        self._cache: tuple[float, list[tuple[str, Any]]] | None = None
        self._lock = threading.Lock()
        meter = provider.get_meter("poolkeeper.cluster", __version__)
        meter.create_observable_gauge(
            "poolkeeper.cluster.member.up",
            [self._members(lambda r: [(r.up, {})])],
            unit="1",
            description="1 when the member answered its last probe, else 0.",
        )
        meter.create_observable_gauge(
            "poolkeeper.cluster.member.lag",
            [self._members(lambda r: [] if r.lag is None else [(r.lag, {})])],
            unit="s",
            description="Replay lag of the member at its last probe.",
        )
        meter.create_observable_up_down_counter(
            "poolkeeper.cluster.member.connections",
            [
                self._members(
                    lambda r: [(r.idle, {STATE: "idle"}), (r.used, {STATE: "used"})]
                )
            ],
            unit="{connection}",
            description="Open connections of the member's pool, by state.",
        )
        meter.create_observable_counter(
            "poolkeeper.cluster.member.checkouts",
            [self._members(lambda r: [(r.checkouts, {})], role=False)],
            unit="{checkout}",
            description="Connections the cluster handed out from this member.",
        )
        meter.create_observable_counter(
            "poolkeeper.cluster.checkouts",
            [self._observe_routes],
            unit="{checkout}",
            description="Checkouts by route: write, read, read_fallback.",
        )
        meter.create_observable_counter(
            "poolkeeper.cluster.primary_changes",
            [self._observe_changes],
            unit="{change}",
            description="Times the write target moved to another member.",
        )

    def _snapshots(self) -> list[tuple[str, Any]]:
        # The callbacks of one collection share one stats() per cluster.
        now = time.monotonic()
        with self._lock:
            if self._cache is None or now - self._cache[0] > _SNAPSHOT_TTL:
                self._cache = (now, self.clusters.snapshots())
            return self._cache[1]

    def forget(self) -> None:
        """Drop the cached snapshot (a cluster was added or removed)."""
        with self._lock:
            self._cache = None

    def _members(
        self,
        values: Callable[[MemberRow], list[tuple[float, dict[str, str]]]],
        role: bool = True,
    ) -> metrics.CallbackT:
        def observe(options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
            out: list[metrics.Observation] = []
            for name, stats in self._snapshots():
                for row in member_rows(stats):
                    base = {CLUSTER: name, MEMBER: row.member}
                    if role:
                        base[ROLE] = row.role
                    out.extend(
                        metrics.Observation(v, {**base, **extra})
                        for v, extra in values(row)
                    )
            return out

        return observe

    def _observe_routes(
        self, options: metrics.CallbackOptions
    ) -> Iterable[metrics.Observation]:
        return [
            metrics.Observation(count, {CLUSTER: name, ROUTE: route})
            for name, stats in self._snapshots()
            for route, count in routes(stats).items()
        ]

    def _observe_changes(
        self, options: metrics.CallbackOptions
    ) -> Iterable[metrics.Observation]:
        return [
            metrics.Observation(stats.primary_changes, {CLUSTER: name})
            for name, stats in self._snapshots()
        ]


_providers: weakref.WeakKeyDictionary[metrics.MeterProvider, _ClusterInstruments] = (
    weakref.WeakKeyDictionary()
)
_providers_lock = threading.Lock()


class ClusterInstrumentation:
    """What :func:`instrument_cluster` returns: :meth:`uninstrument` stops reporting."""

    __slots__ = ("_cluster", "_instruments")

    def __init__(
        self, instruments: _ClusterInstruments, cluster: ObservableCluster
    ) -> None:
        self._instruments = instruments
        self._cluster: ObservableCluster | None = cluster

    def uninstrument(self) -> None:
        """Stop reporting the cluster (safe to call twice)."""
        cluster, self._cluster = self._cluster, None
        if cluster is not None:
            self._instruments.clusters.remove(cluster)
            self._instruments.forget()

    def __enter__(self) -> ClusterInstrumentation:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.uninstrument()


def instrument_cluster(
    cluster: ObservableCluster, meter_provider: metrics.MeterProvider | None = None
) -> ClusterInstrumentation:
    """Report a :class:`~poolkeeper.Cluster`'s members and routing through OpenTelemetry.

    Args:
        cluster: A :class:`~poolkeeper.Cluster` or :class:`~poolkeeper.AsyncCluster`.
        meter_provider: The provider (default: the global one).

    Raises:
        ConfigError: A cluster with the same name is already instrumented on
            this meter provider.
    """
    provider = (
        metrics.get_meter_provider() if meter_provider is None else meter_provider
    )
    with _providers_lock:
        instruments = _providers.get(provider)
        if instruments is None:
            instruments = _ClusterInstruments(provider)
            _providers[provider] = instruments
    instruments.clusters.add(cluster, "this meter provider")
    instruments.forget()
    return ClusterInstrumentation(instruments, cluster)
