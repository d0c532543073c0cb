"""Helpers for the metrics tests: scraping registries and reading OTel data."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import poolkeeper
from poolkeeper import PoolEvent

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def exposition(registry: CollectorRegistry) -> str:
    """Return the registry's text exposition, as a scraper would get it."""
    return generate_latest(registry).decode()


def scrape(registry: CollectorRegistry) -> tuple[str, Samples, dict[str, str]]:
    """Scrape ``registry`` and parse the text back.

    Returns:
        The text, the samples keyed by (sample name, label set) and each
        family's declared type.
    """
    text = exposition(registry)
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in samples, f"duplicate series {key}"
            samples[key] = sample.value
    return text, samples, types


def value(samples: Samples, name: str, **labels: str) -> float:
    """Return one sample's value (KeyError naming it if absent)."""
    key = (name, frozenset(labels.items()))
    if key not in samples:
        raise KeyError(
            f"no sample {name}{labels}; have {sorted(k[0] for k in samples)}"
        )
    return samples[key]


def has_pool(samples: Samples, pool_name: str) -> bool:
    """True when any sample carries ``pool=pool_name``."""
    return any(("pool", pool_name) in labels for _name, labels in samples)


class RecordingPool:
    """Wraps a pool and remembers which listeners are subscribed through it."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self.listeners: list[tuple[str, Any]] = []

    @property
    def name(self) -> str:
        return str(self._pool.name)

    def stats(self) -> poolkeeper.PoolStats:
        result: poolkeeper.PoolStats = self._pool.stats()
        return result

    def on(self, event: str, listener: Any) -> None:
        self._pool.on(event, listener)
        self.listeners.append((event, listener))

    def off(self, event: str, listener: Any) -> None:
        self._pool.off(event, listener)
        self.listeners.remove((event, listener))


def otel_points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    """Collect once and return data points by instrument name."""
    data = reader.get_metrics_data()
    points: dict[str, list[Any]] = {}
    if data is None:
        return points
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points.setdefault(metric.name, []).extend(metric.data.data_points)
    return points


def otel_find(
    points: Mapping[str, list[Any]], name: str, attributes: Mapping[str, str]
) -> Any | None:
    """Return the data point of ``name`` whose attributes are exactly ``attributes``."""
    for point in points.get(name, []):
        if dict(point.attributes) == attributes:
            return point
    return None


def otel_point(
    points: Mapping[str, list[Any]], name: str, attributes: Mapping[str, str]
) -> Any:
    """Like :func:`otel_find`, failing the test when the point is missing."""
    point = otel_find(points, name, attributes)
    assert point is not None, f"no {name} point with {attributes}"
    return point


def event(kind: str, duration: float) -> PoolEvent:
    """Build an event by hand, for feeding listeners directly."""
    return PoolEvent(kind=kind, pool_name="test", duration=duration)
