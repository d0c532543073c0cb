"""Metrics exporters for poolkeeper pools.

Each exporter lives in its own submodule and imports its library only when
that submodule is imported, so ``import poolkeeper`` stays dependency-free:

- :mod:`poolkeeper.metrics.prometheus`: ``register(pool, registry=None)`` adds
  a collector to a ``prometheus_client`` registry
  (``pip install poolkeeper[prometheus]``).
- :mod:`poolkeeper.metrics.otel`: ``instrument(pool, meter_provider=None)``
  reports through ``opentelemetry-api`` with the database client
  semantic-convention names (``pip install poolkeeper[otel]``).

Both read :meth:`~poolkeeper.Pool.stats` when metrics are collected, and feed
their duration histograms from pool events (``checkout``, ``checkin`` and
``connect``).
"""

from __future__ import annotations

__all__: list[str] = []
