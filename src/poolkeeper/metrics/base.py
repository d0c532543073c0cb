"""Pieces shared by the exporters: the pool protocol, listener bookkeeping, histograms."""

from __future__ import annotations

import itertools
import threading
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import Protocol

from poolkeeper._core.events import Listener, PoolEvent
from poolkeeper._core.state import REASONS
from poolkeeper._core.stats import PoolStats
from poolkeeper.errors import ConfigError

#: Reasons a pool closes connections; exporters report each one from the start
#: (as zero) so that rates over them work from the first close.
CLOSE_REASONS = REASONS

#: Default histogram bucket upper bounds, in seconds. Checkout waits are
#: usually microseconds, so the wait buckets start lower than the others.
WAIT_BUCKETS = (
    0.0001,
    0.0005,
    0.001,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
USE_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
)
CONNECT_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class ObservablePool(Protocol):
    """What an exporter needs from a pool; both :class:`~poolkeeper.Pool` and
    :class:`~poolkeeper.AsyncPool` provide it."""

    @property
    def name(self) -> str:
        """The pool's name (the ``pool`` label or attribute)."""
        ...

    def stats(self) -> PoolStats:
        """Return a snapshot of gauges, counters and time summaries."""
        ...

    def on(self, event: str, listener: Listener) -> None:
        """Subscribe ``listener`` to ``event``."""
        ...

    def off(self, event: str, listener: Listener) -> None:
        """Unsubscribe ``listener`` from ``event``."""
        ...


class HasPool(Protocol):
    """An exporter's record of one pool."""

    @property
    def pool(self) -> ObservablePool:
        """The pool the record reports."""
        ...


def check_unique(records: Iterable[HasPool], pool: ObservablePool, where: str) -> None:
    """Refuse a pool that ``records`` already report, or a second pool of its name.

    Raises:
        ConfigError: The pool, or another pool with the same name, is already
            there (metrics of two pools would merge under one name).
    """
    name = pool.name
    for other in records:
        if other.pool is pool or other.pool.name == name:
            raise ConfigError(
                f"a pool named {name!r} is already registered on {where}; "
                "give each pool a distinct name="
            )


class Subscriptions:
    """The listeners one exporter attached to one pool, detached together."""

    __slots__ = ("_attached", "_pool")

    def __init__(self, pool: ObservablePool) -> None:
        self._pool = pool
        self._attached: list[tuple[str, Listener]] = []

    def add(self, event: str, listener: Listener) -> None:
        """Subscribe ``listener`` to ``event`` on the pool and remember it."""
        self._pool.on(event, listener)
        self._attached.append((event, listener))

    def clear(self) -> None:
        """Unsubscribe every listener added so far (safe to call twice)."""
        while self._attached:
            event, listener = self._attached.pop()
            self._pool.off(event, listener)


class BucketHistogram:
    """A fixed-bucket histogram of event durations, cheap enough for every checkout.

    :meth:`observe` is the event listener: one bisect into the sorted bucket
    bounds, then an increment and an add under a lock. The lock is uncontended
    in practice (tens of nanoseconds) and makes the count and sum exact when
    threads check connections in and out at once: ``counts[i] += 1`` alone is
    a read-modify-write that a thread switch can split.
    """

    __slots__ = ("_bounds", "_counts", "_lock", "_sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        """Create an empty histogram.

        Args:
            bounds: Strictly increasing bucket upper bounds in seconds; an
                implicit ``+Inf`` bucket follows the last one.

        Raises:
            ValueError: The bounds are empty or not strictly increasing.
        """
        ordered = tuple(float(b) for b in bounds)
        if not ordered or any(a >= b for a, b in itertools.pairwise(ordered)):
            raise ValueError(
                f"histogram bounds must be non-empty and strictly increasing: {bounds!r}"
            )
        self._bounds = ordered
        self._counts = [0] * (len(ordered) + 1)
        self._sum = 0.0
        self._lock = threading.Lock()

    @property
    def bounds(self) -> tuple[float, ...]:
        """The bucket upper bounds, without ``+Inf``."""
        return self._bounds

    def observe(self, event: PoolEvent) -> None:
        """Count ``event.duration`` (seconds) in its bucket."""
        value = event.duration
        # bisect_left: a value equal to a bound belongs to that bound's bucket (le).
        index = bisect_left(self._bounds, value)
        with self._lock:
            self._counts[index] += 1
            self._sum += value

    def snapshot(self) -> tuple[list[int], float]:
        """Return the cumulative bucket counts (the last one is ``+Inf``) and the sum."""
        with self._lock:
            counts = list(self._counts)
            total = self._sum
        running = 0
        for i, count in enumerate(counts):
            running += count
            counts[i] = running
        return counts, total
