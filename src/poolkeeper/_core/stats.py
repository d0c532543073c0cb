"""Counters, time summaries and the :class:`PoolStats` value object."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

_RING = 1024
_MASK = _RING - 1


class Summary:
    """Count, total and maximum of a duration, plus recent samples for quantiles.

    Recording is O(1) and allocation-free; quantiles are computed from the last
    1024 samples when asked for.
    """

    __slots__ = ("_i", "_samples", "count", "max", "total")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.max = 0.0
        self._samples = [0.0] * _RING
        self._i = 0

    def add(self, value: float) -> None:
        # PoolState.release() has a copy of this body (hot path).
        self.count += 1
        self.total += value
        if value > self.max:
            self.max = value
        self._samples[self._i & _MASK] = value
        self._i += 1

    def snapshot(self) -> TimeSummary:
        n = min(self._i, _RING)
        if n == 0:
            return TimeSummary()
        recent = sorted(self._samples[:n])
        return TimeSummary(
            count=self.count,
            total=self.total,
            max=self.max,
            p50=_quantile(recent, 0.50),
            p95=_quantile(recent, 0.95),
            p99=_quantile(recent, 0.99),
        )


def _quantile(ordered: list[float], q: float) -> float:
    index = max(0, math.ceil(q * len(ordered)) - 1)
    return ordered[index]


@dataclass(frozen=True)
class TimeSummary:
    """A duration summary in seconds: totals over the pool's life, quantiles over recent samples."""

    count: int = 0
    total: float = 0.0
    max: float = 0.0
    p50: float = 0.0
    p95: float = 0.0
    p99: float = 0.0

    @property
    def mean(self) -> float:
        """Mean over the pool's life (0.0 with no samples)."""
        return self.total / self.count if self.count else 0.0


@dataclass(frozen=True)
class PoolStats:
    """A consistent snapshot of a pool's state and counters.

    Gauges (``size``, ``idle``, ``in_use``, ``waiting``, ``connecting``) describe
    this instant, with ``size == idle + in_use``; counters (plural nouns) count
    since the pool was created.
    """

    name: str
    size: int
    idle: int
    in_use: int
    waiting: int
    connecting: int
    min_size: int
    max_size: int
    acquires: int
    timeouts: int
    rejections: int
    """Acquires refused at once with TooManyWaiters."""
    leaks: int
    """Checkouts held longer than ``leak_timeout`` (counted once each)."""
    validations: int
    """Successful checkout validations (pings or ``check`` hook runs)."""
    connections_created: int
    connections_closed: int
    connect_errors: int
    closed_by_reason: dict[str, int] = field(default_factory=dict)
    """Connections closed, by reason: lifetime, idle, uses, broken, check, resize, close, error."""
    wait_time: TimeSummary = field(default_factory=TimeSummary)
    """Time callers spent waiting for a connection (only those that had to wait)."""
    usage_time: TimeSummary = field(default_factory=TimeSummary)
    """Time connections were held by callers."""
    connect_time: TimeSummary = field(default_factory=TimeSummary)
    """Time each successful connect took."""
