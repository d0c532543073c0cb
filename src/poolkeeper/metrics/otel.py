"""OpenTelemetry metrics for poolkeeper pools, through ``opentelemetry-api``.

Call :func:`instrument` once per pool::

    from poolkeeper.metrics import otel

    handle = otel.instrument(pool)  # the global meter provider
    ...
    handle.uninstrument()

The instruments follow the OpenTelemetry database client semantic conventions,
with the attribute ``db.client.connection.pool.name`` on every point:

=============================================  =====================  ===========  ===================================
instrument                                     kind                   unit         source
=============================================  =====================  ===========  ===================================
``db.client.connection.count``                 observable up-down     {connection} ``stats()``: idle / in_use, by
                                                                                   ``db.client.connection.state``
``db.client.connection.max``                   observable up-down     {connection} ``max_size``
``db.client.connection.idle.max``              observable up-down     {connection} ``max_size`` (every connection may idle)
``db.client.connection.idle.min``              observable up-down     {connection} ``min_size``
``db.client.connection.pending_requests``      observable up-down     {request}    ``waiting``
``db.client.connection.timeouts``              observable counter     {timeout}    ``timeouts``
``poolkeeper.query_timeouts``                  observable counter     {connection} ``query_timeouts`` (not semconv)
``db.client.connection.create_time``           histogram              s            ``connect`` events
``db.client.connection.wait_time``             histogram              s            ``checkout`` events (every checkout)
``db.client.connection.use_time``              histogram              s            ``checkin`` events
=============================================  =====================  ===========  ===================================

Observable instruments read :meth:`~poolkeeper.Pool.stats` at collection time,
once per pool per collection.

Histograms are fed from pool events, but not recorded on the caller's path:
the OpenTelemetry SDK's ``Histogram.record`` costs about 4.5 µs of Python per
call on an idle machine (attribute cleaning and hashing, view matching), several
times a pooled checkout itself.
A checkout or checkin only appends its duration to a buffer; the buffer is
recorded into the histograms at the start of every collection (so a
collection reports every duration that happened before it) and, between
collections, by a short-lived background thread (``poolkeeper-otel-flush``)
that wakes once a buffer holds :data:`FLUSH_AT` durations and exits after a
second without work. The SDK's cost is unchanged in total, but it moves off
the thread or task that holds the connection, like the SDK's own batch
processors do for spans. Pass ``histograms=False`` to keep only the
observable instruments.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import deque
from collections.abc import Iterable
from types import TracebackType

from poolkeeper._core.events import Listener, PoolEvent
from poolkeeper._core.stats import PoolStats
from poolkeeper.errors import ConfigError
from poolkeeper.metrics.base import ObservablePool, Subscriptions, check_unique

try:
    from opentelemetry import metrics
except ImportError as exc:  # pragma: no cover - exercised by a test that hides it
    raise ConfigError(
        "poolkeeper.metrics.otel needs the opentelemetry-api package: "
        "pip install poolkeeper[otel]"
    ) from exc

from poolkeeper.metrics._otel_cluster import (
    ClusterInstrumentation,
    instrument_cluster,
)

__all__ = [
    "ClusterInstrumentation",
    "Instrumentation",
    "instrument",
    "instrument_cluster",
]

POOL_NAME = "db.client.connection.pool.name"
STATE = "db.client.connection.state"

#: Bucket boundaries suggested to the SDK (seconds), as the semantic
#: conventions recommend for database client durations, with a finer low end
#: for checkout waits that usually take microseconds.
DURATION_BUCKETS = (
    0.0001,
    0.0005,
    0.001,
    0.005,
    0.01,
    0.05,
    0.1,
    0.5,
    1.0,
    5.0,
    10.0,
)

# The six observable callbacks of one collection share one stats() snapshot
# per pool: stats() takes the pool's lock and sorts its recent samples, which
# is worth doing once, not six times. The SDK hands the same CallbackOptions to
# every callback of a collection; a new options object, or an old snapshot,
# means a fresh stats() call, so the sharing can only save work, never serve
# stale numbers to a later collection.
_SNAPSHOT_TTL = 0.25


class _PoolState:
    """One instrumented pool: its attributes, cached snapshot and listeners."""

    __slots__ = (
        "attributes",
        "buffers",
        "pool",
        "snapshot",
        "snapshot_at",
        "snapshot_for",
        "subscriptions",
    )

    def __init__(self, pool: ObservablePool) -> None:
        self.pool = pool
        self.attributes = {POOL_NAME: pool.name}
        self.buffers: list[_Buffer] = []
        self.subscriptions = Subscriptions(pool)
        self.snapshot: PoolStats | None = None
        self.snapshot_at = 0.0
        self.snapshot_for: metrics.CallbackOptions | None = None

    def stats(self, options: metrics.CallbackOptions) -> PoolStats:
        """Return the pool's stats, shared by the callbacks of one collection."""
        now = time.monotonic()
        snapshot = self.snapshot
        if (
            snapshot is None
            or options is not self.snapshot_for
            or now - self.snapshot_at > _SNAPSHOT_TTL
        ):
            snapshot = self.snapshot = self.pool.stats()
            self.snapshot_for = options
            self.snapshot_at = now
        return snapshot


#: Buffered durations that wake the flush thread (see the module docstring).
FLUSH_AT = 256
#: Seconds the flush thread waits for more work before it exits.
_FLUSH_IDLE = 1.0


class _Buffer:
    """Durations of one pool's events waiting to be recorded into one histogram.

    ``deque.append`` and ``deque.popleft`` are atomic, so event listeners in
    any thread append without a lock while a collection or the flush thread
    drains; every duration is recorded exactly once.
    """

    __slots__ = ("attributes", "record", "samples")

    def __init__(self, histogram: metrics.Histogram, attributes: dict[str, str]):
        self.record = histogram.record
        self.attributes = attributes
        self.samples: deque[float] = deque()

    def listener(self, flusher: _Flusher) -> Listener:
        """Return the event listener that buffers each event's duration."""
        samples = self.samples
        append = samples.append

        def listener(event: PoolEvent) -> None:
            append(event.duration)
            if len(samples) >= FLUSH_AT:
                flusher.wake()

        return listener

    def drain(self) -> None:
        """Record every buffered duration."""
        popleft = self.samples.popleft
        record = self.record
        attributes = self.attributes
        while True:
            try:
                value = popleft()
            except IndexError:
                return
            record(value, attributes)


class _Flusher:
    """The on-demand thread that drains buffers between collections."""

    def __init__(self, buffers: list[_Buffer]) -> None:
        self._buffers = buffers  # shared with _Instruments (appended under its lock)
        self._lock = threading.Lock()
        # One drain at a time: a duration the flush thread has popped but not
        # yet recorded is in its histogram before a collection's drain returns.
        self._drain_lock = threading.Lock()
        self._event = threading.Event()
        self._thread: threading.Thread | None = None

    def wake(self) -> None:
        """Have the buffers drained soon, in the background."""
        self._event.set()
        thread = self._thread
        if thread is not None and thread.is_alive():
            return
        with self._lock:
            # is_alive() is also False for a thread inherited across fork().
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="poolkeeper-otel-flush", daemon=True
                )
                self._thread.start()

    def drain(self, buffers: Iterable[_Buffer] | None = None) -> None:
        """Record everything buffered so far (in ``buffers``, default all), here.

        Waits for a drain in progress in another thread, so every duration
        buffered before the call is in its histogram when this returns.
        """
        with self._drain_lock:
            for buffer in list(self._buffers if buffers is None else buffers):
                buffer.drain()

    def _run(self) -> None:
        while self._event.wait(_FLUSH_IDLE):
            self._event.clear()
            self.drain()
        with self._lock:
            if self._thread is threading.current_thread():
                self._thread = None
        if self._event.is_set():  # woken while exiting: make sure someone drains
            self.wake()


#: The observable up-down counters read from ``stats()``, besides the
#: connection count: (name, unit, PoolStats attribute, description).
_GAUGES: tuple[tuple[str, str, str, str], ...] = (
    (
        "db.client.connection.max",
        "{connection}",
        "max_size",
        "The maximum number of open connections allowed.",
    ),
    (
        "db.client.connection.idle.max",
        "{connection}",
        "max_size",
        "The maximum number of idle open connections allowed.",
    ),
    (
        "db.client.connection.idle.min",
        "{connection}",
        "min_size",
        "The minimum number of idle open connections allowed.",
    ),
    (
        "db.client.connection.pending_requests",
        "{request}",
        "waiting",
        "The number of current pending requests for an open connection.",
    ),
)

#: The observable counters read from ``stats()``: as :data:`_GAUGES`.
_COUNTERS: tuple[tuple[str, str, str, str], ...] = (
    (
        "db.client.connection.timeouts",
        "{timeout}",
        "timeouts",
        "The number of connection timeouts that have occurred trying "
        "to obtain a connection from the pool.",
    ),
    (
        # Not in the semantic conventions: poolkeeper's own namespace.
        "poolkeeper.query_timeouts",
        "{connection}",
        "query_timeouts",
        "Checked-out connections aborted because a command was stuck "
        "longer than query_timeout.",
    ),
)


class _Instruments:
    """The instruments of one meter provider, shared by every pool instrumented on it.

    OpenTelemetry has no way to delete an instrument, and a second instrument
    of the same name would be a duplicate, so the instruments are created once
    per provider and their callbacks report whichever pools are registered.
    """

    def __init__(self, provider: metrics.MeterProvider) -> None:
        from poolkeeper import __version__

        self._lock = threading.Lock()
        self._pools: list[_PoolState] = []
        self._buffers: list[_Buffer] = []
        self.flusher = _Flusher(self._buffers)
        meter = provider.get_meter("poolkeeper", __version__)
        updown = meter.create_observable_up_down_counter
        updown(
            "db.client.connection.count",
            [self._observe_count],
            unit="{connection}",
            description="The number of connections that are currently in the state "
            "described by the state attribute.",
        )
        for name, unit, attribute, description in _GAUGES:
            updown(
                name, [self._observer(attribute)], unit=unit, description=description
            )
        for name, unit, attribute, description in _COUNTERS:
            meter.create_observable_counter(
                name, [self._observer(attribute)], unit=unit, description=description
            )
        self._create_histograms(meter)

    def _create_histograms(self, meter: metrics.Meter) -> None:
        """Create the connection time histograms (create, wait, use)."""
        self.create_time = meter.create_histogram(
            "db.client.connection.create_time",
            unit="s",
            description="The time it took to create a new connection.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.wait_time = meter.create_histogram(
            "db.client.connection.wait_time",
            unit="s",
            description="The time it took to obtain an open connection from the pool.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.use_time = meter.create_histogram(
            "db.client.connection.use_time",
            unit="s",
            description="The time between borrowing a connection and returning it "
            "to the pool.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )

    def add(self, state: _PoolState) -> None:
        """Report ``state``'s pool from the next collection on.

        Raises:
            ConfigError: The pool, or another pool with the same name, is
                already instrumented on this meter provider.
        """
        with self._lock:
            check_unique(self._pools, state.pool, "this meter provider")
            self._pools.append(state)

    def remove(self, state: _PoolState) -> None:
        """Stop reporting ``state``'s pool (its buffered durations are recorded first)."""
        self.flusher.drain(state.buffers)
        with self._lock:
            if state in self._pools:
                self._pools.remove(state)
            self._buffers[:] = [b for b in self._buffers if b not in state.buffers]

    def buffer(self, state: _PoolState, histogram: metrics.Histogram) -> Listener:
        """Return a listener buffering durations for ``histogram`` (see :class:`_Buffer`)."""
        buffer = _Buffer(histogram, state.attributes)
        state.buffers.append(buffer)
        with self._lock:
            self._buffers.append(buffer)
        return buffer.listener(self.flusher)

    def _snapshots(
        self, options: metrics.CallbackOptions
    ) -> list[tuple[_PoolState, PoolStats]]:
        # Observable callbacks run before the SDK reads its histograms, so
        # draining here puts every buffered duration into this collection.
        self.flusher.drain()
        with self._lock:
            pools = list(self._pools)
        return [(state, state.stats(options)) for state in pools]

    def _observe_count(
        self, options: metrics.CallbackOptions
    ) -> Iterable[metrics.Observation]:
        observations = []
        for state, stats in self._snapshots(options):
            idle = {**state.attributes, STATE: "idle"}
            used = {**state.attributes, STATE: "used"}
            observations.append(metrics.Observation(stats.idle, idle))
            observations.append(metrics.Observation(stats.in_use, used))
        return observations

    def _observer(self, attribute: str) -> metrics.CallbackT:
        """Return a callback observing ``PoolStats.<attribute>`` for every pool."""

        def observe(options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
            return [
                metrics.Observation(getattr(stats, attribute), state.attributes)
                for state, stats in self._snapshots(options)
            ]

        return observe


_providers: weakref.WeakKeyDictionary[metrics.MeterProvider, _Instruments] = (
    weakref.WeakKeyDictionary()
)
_providers_lock = threading.Lock()


class Instrumentation:
    """What :func:`instrument` returns: call :meth:`uninstrument` to stop reporting.

    Also a context manager that uninstruments on exit.
    """

    __slots__ = ("_instruments", "_state")

    def __init__(self, instruments: _Instruments, state: _PoolState) -> None:
        self._instruments = instruments
        self._state: _PoolState | None = state

    def uninstrument(self) -> None:
        """Remove the pool's listeners and stop reporting it (safe to call twice).

        The instruments stay on the meter (OpenTelemetry cannot delete them)
        but no longer report this pool.
        """
        state, self._state = self._state, None
        if state is None:
            return
        state.subscriptions.clear()
        self._instruments.remove(state)

    def __enter__(self) -> Instrumentation:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.uninstrument()


def instrument(
    pool: ObservablePool,
    meter_provider: metrics.MeterProvider | None = None,
    *,
    histograms: bool = True,
) -> Instrumentation:
    """Report ``pool``'s metrics through OpenTelemetry.

    Args:
        pool: A :class:`~poolkeeper.Pool` or :class:`~poolkeeper.AsyncPool`.
            Its ``name`` becomes the ``db.client.connection.pool.name``
            attribute.
        meter_provider: The provider to create instruments with (default: the
            global one, ``opentelemetry.metrics.get_meter_provider()``; set it
            up before instrumenting).
        histograms: Also record ``create_time``, ``wait_time`` and
            ``use_time`` from pool events (default ``True``), buffered and
            recorded off the caller's path (see the module docstring).
            ``False`` adds no listener, so only collections cost anything.

    Returns:
        An :class:`Instrumentation`; its ``uninstrument()`` removes the
        listeners and stops reporting the pool.

    Raises:
        ConfigError: A pool with the same name is already instrumented on
            this meter provider.
    """
    provider = (
        metrics.get_meter_provider() if meter_provider is None else meter_provider
    )
    with _providers_lock:
        instruments = _providers.get(provider)
        if instruments is None:
            instruments = _Instruments(provider)
            _providers[provider] = instruments
    state = _PoolState(pool)
    instruments.add(state)
    if histograms:
        subscriptions = state.subscriptions
        buffer = instruments.buffer
        subscriptions.add("connect", buffer(state, instruments.create_time))
        subscriptions.add("checkout", buffer(state, instruments.wait_time))
        subscriptions.add("checkin", buffer(state, instruments.use_time))
    return Instrumentation(instruments, state)
