"""Prometheus metrics for poolkeeper pools, through ``prometheus_client``.

Call :func:`register` once per pool::

    from poolkeeper.metrics import prometheus

    handle = prometheus.register(pool)  # the default registry
    ...
    handle.unregister()

Gauges and counters are read from :meth:`~poolkeeper.Pool.stats` when the
registry is scraped, so they cost nothing between scrapes. The three duration
histograms are fed by ``checkout``, ``checkin`` and ``connect`` listeners,
whose per-event work is a bisect and an add.

Every series carries a ``pool`` label with the pool's name. All pools
registered on one registry share one collector, so each metric family appears
once in the exposition however many pools there are.

Metrics (``_total`` counters, ``_seconds`` histograms):

==========================================  =========  =========================================
name                                        type       meaning
==========================================  =========  =========================================
``poolkeeper_connections{state}``           gauge      open connections, ``idle`` or ``used``
``poolkeeper_connections_opening``          gauge      connection attempts in progress
``poolkeeper_connections_min``              gauge      ``min_size``
``poolkeeper_connections_max``              gauge      ``max_size``
``poolkeeper_pending_requests``             gauge      callers waiting for a connection
``poolkeeper_acquires_total``               counter    successful checkouts
``poolkeeper_timeouts_total``               counter    ``PoolTimeout`` raised to callers
``poolkeeper_rejections_total``             counter    ``TooManyWaiters`` raised to callers
``poolkeeper_leaks_total``                  counter    checkouts held past ``leak_timeout``
``poolkeeper_query_timeouts_total``         counter    connections aborted by ``query_timeout``
``poolkeeper_validations_total``            counter    successful checkout validations
``poolkeeper_connections_created_total``    counter    connections opened
``poolkeeper_connections_closed_total``     counter    connections closed, by ``reason``
``poolkeeper_connect_errors_total``         counter    failed connection attempts
``poolkeeper_wait_seconds``                 histogram  time to get a connection, every checkout
``poolkeeper_use_seconds``                  histogram  time a connection was held
``poolkeeper_connect_seconds``              histogram  time a successful connect took
==========================================  =========  =========================================
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any

from poolkeeper.errors import ConfigError
from poolkeeper.metrics._cluster import (
    Clusters,
    ObservableCluster,
    member_rows,
    routes,
)
from poolkeeper.metrics.base import (
    CLOSE_REASONS,
    CONNECT_BUCKETS,
    USE_BUCKETS,
    WAIT_BUCKETS,
    BucketHistogram,
    ObservablePool,
    Subscriptions,
    check_unique,
)

try:
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
    from prometheus_client.registry import REGISTRY, Collector, CollectorRegistry
except ImportError as exc:  # pragma: no cover - exercised by a test that hides it
    raise ConfigError(
        "poolkeeper.metrics.prometheus needs the prometheus_client package: "
        "pip install poolkeeper[prometheus]"
    ) from exc

__all__ = ["ClusterRegistration", "Registration", "register", "register_cluster"]

_COUNTERS = (
    ("poolkeeper_acquires", "Successful connection checkouts.", "acquires"),
    ("poolkeeper_timeouts", "Callers that gave up waiting (PoolTimeout).", "timeouts"),
    (
        "poolkeeper_rejections",
        "Acquires refused at once because max_waiting callers were waiting.",
        "rejections",
    ),
    ("poolkeeper_leaks", "Checkouts held longer than leak_timeout.", "leaks"),
    (
        "poolkeeper_query_timeouts",
        "Checked-out connections aborted because a command was stuck past "
        "query_timeout.",
        "query_timeouts",
    ),
    ("poolkeeper_validations", "Successful checkout validations.", "validations"),
    (
        "poolkeeper_connections_created",
        "Connections opened.",
        "connections_created",
    ),
    ("poolkeeper_connect_errors", "Failed connection attempts.", "connect_errors"),
)
_GAUGES = (
    (
        "poolkeeper_connections_opening",
        "Connection attempts in progress.",
        "connecting",
    ),
    ("poolkeeper_connections_min", "Connections kept open (min_size).", "min_size"),
    ("poolkeeper_connections_max", "Most connections allowed (max_size).", "max_size"),
    ("poolkeeper_pending_requests", "Callers waiting for a connection.", "waiting"),
)
_HISTOGRAMS = (
    (
        "poolkeeper_wait_seconds",
        "Time callers took to get a connection, waits included.",
        "checkout",
        WAIT_BUCKETS,
    ),
    (
        "poolkeeper_use_seconds",
        "Time connections were held by callers.",
        "checkin",
        USE_BUCKETS,
    ),
    (
        "poolkeeper_connect_seconds",
        "Time each successful connect took.",
        "connect",
        CONNECT_BUCKETS,
    ),
)


class _PoolMetrics:
    """One registered pool: its histograms and the listeners that feed them."""

    __slots__ = ("histograms", "pool", "subscriptions")

    def __init__(self, pool: ObservablePool, histograms: bool) -> None:
        self.pool = pool
        self.subscriptions = Subscriptions(pool)
        self.histograms: dict[str, BucketHistogram] = {}
        if histograms:
            for name, _doc, event, bounds in _HISTOGRAMS:
                histogram = BucketHistogram(bounds)
                self.histograms[name] = histogram
                self.subscriptions.add(event, histogram.observe)


class PoolCollector(Collector):
    """A ``prometheus_client`` collector for every pool registered on one registry.

    Built and registered by :func:`register`; not meant to be created directly.
    """

    def __init__(self) -> None:
        """Create a collector with no pools."""
        self._lock = threading.Lock()
        self._pools: list[_PoolMetrics] = []

    def add(self, entry: _PoolMetrics) -> None:
        """Report ``entry``'s pool from the next scrape on.

        Raises:
            ConfigError: The pool, or another pool with the same name, is
                already registered here.
        """
        with self._lock:
            check_unique(self._pools, entry.pool, "this Prometheus registry")
            self._pools.append(entry)

    def remove(self, entry: _PoolMetrics) -> bool:
        """Stop reporting ``entry``'s pool; return whether pools remain."""
        with self._lock:
            if entry in self._pools:
                self._pools.remove(entry)
            return bool(self._pools)

    def describe(self) -> Iterable[Metric]:
        """Return the metric families without samples (for name-clash checks)."""
        return self._families([])

    def collect(self) -> Iterable[Metric]:
        """Read every pool's stats and histograms into metric families."""
        with self._lock:
            pools = list(self._pools)
        return self._families(pools)

    def _families(self, pools: list[_PoolMetrics]) -> Iterator[Metric]:
        snapshots = [(entry, entry.pool.stats()) for entry in pools]
        connections = GaugeMetricFamily(
            "poolkeeper_connections",
            "Open connections by state: idle in the pool, or used by a caller.",
            labels=["pool", "state"],
        )
        for _entry, stats in snapshots:
            connections.add_metric([stats.name, "idle"], stats.idle)
            connections.add_metric([stats.name, "used"], stats.in_use)
        yield connections
        for name, doc, attribute in _GAUGES:
            gauge = GaugeMetricFamily(name, doc, labels=["pool"])
            for _entry, stats in snapshots:
                gauge.add_metric([stats.name], getattr(stats, attribute))
            yield gauge
        for name, doc, attribute in _COUNTERS:
            counter = CounterMetricFamily(name, doc, labels=["pool"])
            for _entry, stats in snapshots:
                counter.add_metric([stats.name], getattr(stats, attribute))
            yield counter
        closed = CounterMetricFamily(
            "poolkeeper_connections_closed",
            "Connections closed, by reason.",
            labels=["pool", "reason"],
        )
        for _entry, stats in snapshots:
            by_reason = dict.fromkeys(CLOSE_REASONS, 0)
            by_reason.update(stats.closed_by_reason)
            for reason, count in by_reason.items():
                closed.add_metric([stats.name, reason], count)
        yield closed
        for name, doc, _event, _bounds in _HISTOGRAMS:
            family = HistogramMetricFamily(name, doc, labels=["pool"])
            for entry, stats in snapshots:
                histogram = entry.histograms.get(name)
                if histogram is None:
                    continue
                counts, total = histogram.snapshot()
                buckets = [
                    (_format_bound(bound), count)
                    for bound, count in zip(histogram.bounds, counts[:-1], strict=True)
                ]
                buckets.append(("+Inf", counts[-1]))
                family.add_metric([stats.name], buckets, total)
            yield family


def _format_bound(bound: float) -> str:
    # Same spelling as prometheus_client's own histograms: 0.005, 1.0, 10.0.
    return repr(float(bound))


_collectors: weakref.WeakKeyDictionary[CollectorRegistry, PoolCollector] = (
    weakref.WeakKeyDictionary()
)
_collectors_lock = threading.Lock()


class Registration:
    """What :func:`register` returns: call :meth:`unregister` to stop reporting.

    Also a context manager that unregisters on exit.
    """

    __slots__ = ("_collector", "_entry", "_registry")

    def __init__(
        self,
        registry: CollectorRegistry,
        collector: PoolCollector,
        entry: _PoolMetrics,
    ) -> None:
        self._registry = registry
        self._collector = collector
        self._entry: _PoolMetrics | None = entry

    @property
    def registry(self) -> CollectorRegistry:
        """The registry the pool is reported on."""
        return self._registry

    def unregister(self) -> None:
        """Remove the pool's listeners and its series (safe to call twice).

        The shared collector leaves the registry with the last pool.
        """
        entry, self._entry = self._entry, None
        if entry is None:
            return
        entry.subscriptions.clear()
        with _collectors_lock:
            if not self._collector.remove(entry):
                if _collectors.get(self._registry) is self._collector:
                    del _collectors[self._registry]
                self._registry.unregister(self._collector)

    def __enter__(self) -> Registration:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.unregister()


def register(
    pool: ObservablePool,
    registry: CollectorRegistry | None = None,
    *,
    histograms: bool = True,
) -> Registration:
    """Report ``pool``'s metrics on a Prometheus registry.

    Args:
        pool: A :class:`~poolkeeper.Pool` or :class:`~poolkeeper.AsyncPool`.
            Its ``name`` becomes the ``pool`` label.
        registry: The registry to report on (default: ``prometheus_client``'s
            global ``REGISTRY``).
        histograms: Also record the wait, use and connect histograms from pool
            events (default ``True``). ``False`` adds no listener, so only
            scrapes cost anything.

    Returns:
        A :class:`Registration`; its ``unregister()`` removes the listeners
        and the pool's series.

    Raises:
        ConfigError: A pool with the same name is already registered on this
            registry.
    """
    target = REGISTRY if registry is None else registry
    entry = _PoolMetrics(pool, histograms)
    try:
        with _collectors_lock:
            collector = _collectors.get(target)
            if collector is None:
                collector = PoolCollector()
                collector.add(entry)
                target.register(collector)
                _collectors[target] = collector
            else:
                collector.add(entry)
    except BaseException:
        entry.subscriptions.clear()
        raise
    return Registration(target, collector, entry)


# ----------------------------------------------------------------- clusters

_MEMBER_COUNTERS = (
    (
        "poolkeeper_cluster_member_checkouts",
        "Connections the cluster handed out from this member.",
        "checkouts",
    ),
    (
        "poolkeeper_cluster_member_connect_errors",
        "Failed connection attempts of this member's pool.",
        "connect_errors",
    ),
    (
        "poolkeeper_cluster_member_timeouts",
        "PoolTimeouts raised by this member's pool.",
        "timeouts",
    ),
)
_CLUSTER_COUNTERS = (
    (
        "poolkeeper_cluster_primary_changes",
        "Times the write target moved to another member.",
        "primary_changes",
    ),
    ("poolkeeper_cluster_refreshes", "Role and lag refreshes.", "refreshes"),
    (
        "poolkeeper_cluster_refresh_errors",
        "Members that failed a probe, plus refreshes that failed as a whole.",
        "refresh_errors",
    ),
)


class ClusterCollector(Collector):
    """A ``prometheus_client`` collector for every cluster registered on one registry.

    Built and registered by :func:`register_cluster`; reads each cluster's
    ``stats()`` at scrape time, so members that come and go are followed.
    """

    def __init__(self) -> None:
        """Create a collector with no clusters."""
        self.clusters = Clusters()

    def describe(self) -> Iterable[Metric]:
        """Return the metric families without samples (for name-clash checks)."""
        return self._families([])

    def collect(self) -> Iterable[Metric]:
        """Read every cluster's stats into metric families."""
        return self._families(self.clusters.snapshots())

    def _families(self, snapshots: list[tuple[str, Any]]) -> Iterator[Metric]:
        member_labels = ["cluster", "member", "role"]
        up = GaugeMetricFamily(
            "poolkeeper_cluster_member_up",
            "1 when the member answered its last probe, else 0.",
            labels=member_labels,
        )
        lag = GaugeMetricFamily(
            "poolkeeper_cluster_member_lag_seconds",
            "Replay lag of the member at its last probe (0 on a primary).",
            labels=member_labels,
        )
        connections = GaugeMetricFamily(
            "poolkeeper_cluster_member_connections",
            "Open connections of the member's pool, by state.",
            labels=[*member_labels, "state"],
        )
        pending = GaugeMetricFamily(
            "poolkeeper_cluster_member_pending_requests",
            "Callers waiting on the member's pool.",
            labels=member_labels,
        )
        counters = [
            (CounterMetricFamily(name, doc, labels=["cluster", "member"]), field)
            for name, doc, field in _MEMBER_COUNTERS
        ]
        checkouts = CounterMetricFamily(
            "poolkeeper_cluster_checkouts",
            "Checkouts by route: write, read (a replica), read_fallback (the primary).",
            labels=["cluster", "route"],
        )
        totals = [
            (CounterMetricFamily(name, doc, labels=["cluster"]), field)
            for name, doc, field in _CLUSTER_COUNTERS
        ]
        for name, stats in snapshots:
            for row in member_rows(stats):
                labels = [name, row.member, row.role]
                up.add_metric(labels, row.up)
                if row.lag is not None:
                    lag.add_metric(labels, row.lag)
                connections.add_metric([*labels, "idle"], row.idle)
                connections.add_metric([*labels, "used"], row.used)
                pending.add_metric(labels, row.waiting)
                for family, field in counters:
                    family.add_metric([name, row.member], getattr(row, field))
            for route, count in routes(stats).items():
                checkouts.add_metric([name, route], count)
            for family, field in totals:
                family.add_metric([name], getattr(stats, field))
        yield from (up, lag, connections, pending)
        yield from (family for family, _ in counters)
        yield checkouts
        yield from (family for family, _ in totals)


_cluster_collectors: weakref.WeakKeyDictionary[CollectorRegistry, ClusterCollector] = (
    weakref.WeakKeyDictionary()
)


class ClusterRegistration:
    """What :func:`register_cluster` returns: :meth:`unregister` stops reporting.

    Also a context manager that unregisters on exit.
    """

    __slots__ = ("_cluster", "_collector", "_registry")

    def __init__(
        self,
        registry: CollectorRegistry,
        collector: ClusterCollector,
        cluster: ObservableCluster,
    ) -> None:
        self._registry = registry
        self._collector = collector
        self._cluster: ObservableCluster | None = cluster

    def unregister(self) -> None:
        """Remove the cluster's series (safe to call twice)."""
        cluster, self._cluster = self._cluster, None
        if cluster is None:
            return
        with _collectors_lock:
            if not self._collector.clusters.remove(cluster):
                if _cluster_collectors.get(self._registry) is self._collector:
                    del _cluster_collectors[self._registry]
                self._registry.unregister(self._collector)

    def __enter__(self) -> ClusterRegistration:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.unregister()


def register_cluster(
    cluster: ObservableCluster, registry: CollectorRegistry | None = None
) -> ClusterRegistration:
    """Report a :class:`~poolkeeper.Cluster`'s members and routing on a registry.

    Series carry ``cluster`` (the cluster's name), ``member`` (``HOST:PORT``)
    and, on gauges, ``role``; see docs/OBSERVABILITY.md for the list.

    Args:
        cluster: A :class:`~poolkeeper.Cluster` or :class:`~poolkeeper.AsyncCluster`.
        registry: The registry to report on (default: the global ``REGISTRY``).

    Raises:
        ConfigError: A cluster with the same name is already registered there.
    """
    target = REGISTRY if registry is None else registry
    with _collectors_lock:
        collector = _cluster_collectors.get(target)
        if collector is None:
            collector = ClusterCollector()
            collector.clusters.add(cluster, "this Prometheus registry")
            target.register(collector)
            _cluster_collectors[target] = collector
        else:
            collector.clusters.add(cluster, "this Prometheus registry")
    return ClusterRegistration(target, collector, cluster)
