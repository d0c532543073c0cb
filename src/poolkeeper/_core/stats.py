"""Counters, time summaries and the :class:`PoolStats` value object."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

_RING = 1024
_MASK = _RING - 1


class Summary:
    """Count, total and maximum of a duration, plus recent samples for quantiles.

    Recording is O(1) and allocation-free; quantiles are computed from the last
    1024 samples when asked for, from a :meth:`copy` (taken under the pool's
    lock) with no lock held.
    """

    __slots__ = ("_i", "_samples", "count", "max", "total", "zeros")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.max = 0.0
        self._samples = [0.0] * _RING
        self._i = 0
        #: Samples of 0.0 recorded but not yet counted or in the ring: the
        #: hot path only counts them (``zeros += 1``, see PoolState.acquire);
        #: :meth:`add` and :meth:`copy` put them in first, in order.
        self.zeros = 0

    def add(self, value: float) -> None:
        # PoolState.release() has a copy of this body (hot path).
        if self.zeros:
            self._add_zeros()
        self.count += 1
        self.total += value
        if value > self.max:
            self.max = value
        self._samples[self._i & _MASK] = value
        self._i += 1

    def _add_zeros(self) -> None:
        """Record the pending :attr:`zeros` as samples (at most a ring's worth
        is written: older ones would be overwritten anyway)."""
        n, self.zeros = self.zeros, 0
        self.count += n
        samples = self._samples
        end = self._i + n
        for i in range(max(self._i, end - _RING), end):
            samples[i & _MASK] = 0.0
        self._i = end

    @property
    def mean(self) -> float:
        """Mean over the pool's life (0.0 with no samples)."""
        count = self.count + self.zeros
        return self.total / count if count else 0.0

    def copy(self) -> SummaryCopy:
        """Copy the totals and recent samples: cheap enough to do under a lock."""
        if self.zeros:
            self._add_zeros()
        return SummaryCopy(
            self.count, self.total, self.max, self._samples[: min(self._i, _RING)]
        )

    def snapshot(self) -> TimeSummary:
        return self.copy().summarize()


class SummaryCopy:
    """The raw numbers of a :class:`Summary`, copied; quantiles not yet computed."""

    __slots__ = ("count", "max", "samples", "total")

    def __init__(
        self, count: int, total: float, maximum: float, samples: list[float]
    ) -> None:
        self.count = count
        self.total = total
        self.max = maximum
        self.samples = samples

    def summarize(self) -> TimeSummary:
        """Sort the samples and compute the quantiles (do it outside any lock)."""
        if not self.samples:
            return TimeSummary()
        recent = sorted(self.samples)
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
    """Connections closed, by reason: lifetime, idle, uses, broken, check, resize, close, error, query_timeout, cancelled, leaked, role_changed."""
    wait_time: TimeSummary = field(default_factory=TimeSummary)
    """Time each checkout took to obtain its connection, 0 s for those served at
    once included (OpenTelemetry's ``db.client.connection.wait_time``)."""
    usage_time: TimeSummary = field(default_factory=TimeSummary)
    """Time connections were held by callers."""
    connect_time: TimeSummary = field(default_factory=TimeSummary)
    """Time each successful connect took."""
    query_timeouts: int = 0
    """Checked-out connections aborted by the ``query_timeout`` watchdog."""
    connections_by_host: dict[str, int] = field(default_factory=dict)
    """Open connections per server, keyed ``"host:port"`` (PostgreSQL URLs;
    empty for other pools): where a multi-host URL's connections went."""


class StatsCopy:
    """What :meth:`PoolState.stats_copy` takes under the pool's lock.

    Gauges and counters are copied as plain numbers and the time summaries as
    raw sample lists; :meth:`build` sorts the samples for the quantiles and
    makes the :class:`PoolStats`, with no lock held. So ``stats()`` blocks
    acquires and releases only for the length of three list copies (about a
    twentieth of the whole call, measured), however often it is called.
    """

    __slots__ = ("connect_time", "fields", "usage_time", "wait_time")

    def __init__(
        self,
        fields: dict[str, Any],
        wait_time: SummaryCopy,
        usage_time: SummaryCopy,
        connect_time: SummaryCopy,
    ) -> None:
        self.fields = fields
        self.wait_time = wait_time
        self.usage_time = usage_time
        self.connect_time = connect_time

    def build(self) -> PoolStats:
        """Compute the quantiles and return the :class:`PoolStats`."""
        closed: dict[str, int] = self.fields["closed_by_reason"]
        return PoolStats(
            **self.fields,
            connections_closed=sum(closed.values()),
            wait_time=self.wait_time.summarize(),
            usage_time=self.usage_time.summarize(),
            connect_time=self.connect_time.summarize(),
        )
