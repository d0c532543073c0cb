"""The OpenTelemetry exporter, read back through the SDK's in-memory reader."""

from __future__ import annotations

import importlib
import sys
import threading
import time
from collections.abc import Iterator

import opentelemetry.metrics as otel_metrics
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import poolkeeper
from poolkeeper.metrics import otel

from .helpers import RecordingPool, otel_find, otel_point, otel_points

SQLITE = "sqlite:///:memory:"
NAME = otel.POOL_NAME
STATE = otel.STATE


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def provider(reader: InMemoryMetricReader) -> Iterator[MeterProvider]:
    meter_provider = MeterProvider(metric_readers=[reader])
    yield meter_provider
    meter_provider.shutdown()


def test_semantic_convention_instruments(reader, provider):
    pool = poolkeeper.Pool(SQLITE, min_size=1, max_size=3, name="main")
    with otel.instrument(pool, provider), pool:
        pool.open(wait=True, timeout=5.0)
        for _ in range(3):
            with pool.connection() as conn:
                conn.execute("SELECT 1")
        held = pool.acquire()
        try:
            points = otel_points(reader)
        finally:
            pool.release(held)

    attrs = {NAME: "main"}
    used = otel_point(points, "db.client.connection.count", {**attrs, STATE: "used"})
    idle = otel_point(points, "db.client.connection.count", {**attrs, STATE: "idle"})
    assert (used.value, idle.value) == (1, 0)
    assert otel_point(points, "db.client.connection.max", attrs).value == 3
    assert otel_point(points, "db.client.connection.idle.max", attrs).value == 3
    assert otel_point(points, "db.client.connection.idle.min", attrs).value == 1
    assert otel_point(points, "db.client.connection.pending_requests", attrs).value == 0
    assert otel_point(points, "db.client.connection.timeouts", attrs).value == 0
    assert otel_point(points, "poolkeeper.query_timeouts", attrs).value == 0
    assert otel_point(points, "db.client.connection.wait_time", attrs).count == 4
    assert otel_point(points, "db.client.connection.use_time", attrs).count == 3
    assert otel_point(points, "db.client.connection.create_time", attrs).count == 1
    use = otel_point(points, "db.client.connection.use_time", attrs)
    assert use.sum > 0
    assert list(use.explicit_bounds) == list(otel.DURATION_BUCKETS)


def test_units_and_kinds(reader, provider):
    pool = poolkeeper.Pool(SQLITE, name="units")
    with otel.instrument(pool, provider), pool:
        with pool.connection():
            pass
        data = reader.get_metrics_data()
    assert data is not None
    metrics = {
        metric.name: metric
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if scope.scope.name == "poolkeeper"
    }
    assert metrics["db.client.connection.count"].unit == "{connection}"
    assert metrics["db.client.connection.pending_requests"].unit == "{request}"
    assert metrics["db.client.connection.timeouts"].unit == "{timeout}"
    for name in ("create_time", "wait_time", "use_time"):
        assert metrics[f"db.client.connection.{name}"].unit == "s"
    assert not metrics["db.client.connection.count"].data.is_monotonic
    assert metrics["db.client.connection.timeouts"].data.is_monotonic
    assert metrics["poolkeeper.query_timeouts"].data.is_monotonic
    assert metrics["poolkeeper.query_timeouts"].unit == "{connection}"


def test_timeouts(reader, provider):
    with (
        poolkeeper.Pool(SQLITE, max_size=1, name="t") as pool,
        otel.instrument(pool, provider),
    ):
        held = pool.acquire()
        try:
            with pytest.raises(poolkeeper.PoolTimeout):
                pool.acquire(timeout=0.01)
            points = otel_points(reader)
        finally:
            pool.release(held)
    assert otel_point(points, "db.client.connection.timeouts", {NAME: "t"}).value == 1


def test_later_collections_see_fresh_numbers(reader, provider):
    with (
        poolkeeper.Pool(SQLITE, max_size=2, name="fresh") as pool,
        otel.instrument(pool, provider),
    ):
        before = otel_points(reader)
        held = pool.acquire()
        try:
            after = otel_points(reader)
        finally:
            pool.release(held)
    attrs = {NAME: "fresh", STATE: "used"}
    assert otel_point(before, "db.client.connection.count", attrs).value == 0
    assert otel_point(after, "db.client.connection.count", attrs).value == 1


def test_two_pools_and_uninstrument(reader, provider):
    with (
        poolkeeper.Pool(SQLITE, max_size=1, name="a") as a,
        poolkeeper.Pool(SQLITE, max_size=2, name="b") as b,
    ):
        recording = RecordingPool(a)
        handle_a = otel.instrument(recording, provider)
        with otel.instrument(b, provider):
            points = otel_points(reader)
            assert (
                otel_point(points, "db.client.connection.max", {NAME: "a"}).value == 1
            )
            assert (
                otel_point(points, "db.client.connection.max", {NAME: "b"}).value == 2
            )
            handle_a.uninstrument()
            handle_a.uninstrument()
            assert recording.listeners == []
            points = otel_points(reader)
            assert otel_find(points, "db.client.connection.max", {NAME: "a"}) is None
            assert (
                otel_point(points, "db.client.connection.max", {NAME: "b"}).value == 2
            )
        # Instrumenting again on the same provider reuses its instruments.
        with otel.instrument(a, provider):
            points = otel_points(reader)
            assert (
                otel_point(points, "db.client.connection.max", {NAME: "a"}).value == 1
            )


def test_duplicate_pool_name_is_refused(provider):
    with (
        poolkeeper.Pool(SQLITE, name="same") as a,
        poolkeeper.Pool(SQLITE, name="same") as b,
        otel.instrument(a, provider),
    ):
        recording = RecordingPool(b)
        with pytest.raises(poolkeeper.ConfigError, match="same"):
            otel.instrument(recording, provider)
        assert recording.listeners == []


def test_without_histograms_no_listener_is_added(reader, provider):
    with poolkeeper.Pool(SQLITE, name="cheap") as pool:
        recording = RecordingPool(pool)
        with otel.instrument(recording, provider, histograms=False):
            assert recording.listeners == []
            points = otel_points(reader)
    assert "db.client.connection.wait_time" not in points
    assert otel_find(points, "db.client.connection.max", {NAME: "cheap"}) is not None


def test_global_meter_provider_by_default(monkeypatch, reader, provider):
    monkeypatch.setattr(otel_metrics, "get_meter_provider", lambda: provider)
    with poolkeeper.Pool(SQLITE, name="global") as pool, otel.instrument(pool):
        points = otel_points(reader)
    assert otel_find(points, "db.client.connection.max", {NAME: "global"}) is not None


@pytest.mark.anyio
async def test_async_pool(reader, provider):
    async with poolkeeper.AsyncPool(
        "sqlite+aiosqlite:///:memory:", max_size=2, name="aio"
    ) as pool:
        with otel.instrument(pool, provider):
            async with pool.connection():
                pass
            conn = await pool.acquire()
            points = otel_points(reader)
            await pool.release(conn)
    used = otel_point(
        points, "db.client.connection.count", {NAME: "aio", STATE: "used"}
    )
    assert used.value == 1
    assert otel_point(points, "db.client.connection.use_time", {NAME: "aio"}).count == 1


def test_missing_opentelemetry_names_the_extra(monkeypatch):
    for name in [m for m in sys.modules if m.split(".")[0] == "opentelemetry"]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    monkeypatch.delitem(sys.modules, "poolkeeper.metrics.otel")
    with pytest.raises(poolkeeper.ConfigError, match=r"poolkeeper\[otel\]"):
        importlib.import_module("poolkeeper.metrics.otel")


def _flush_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "poolkeeper-otel-flush"]


def _buffered(handle: otel.Instrumentation) -> int:
    state = handle._state
    assert state is not None
    return sum(len(b.samples) for b in state.buffers)


def test_histograms_are_recorded_off_the_callers_path(reader, provider, monkeypatch):
    # The SDK's Histogram.record never runs in the thread doing checkouts.
    recorded_in: set[str] = set()
    warmup = poolkeeper.Pool(SQLITE, name="warmup")
    otel.instrument(warmup, provider, histograms=False).uninstrument()
    instruments = otel._providers[provider]  # the provider's instruments, now made
    for histogram in (instruments.wait_time, instruments.use_time):
        original = histogram.record

        def spy(value, attributes=None, context=None, _original=original):
            recorded_in.add(threading.current_thread().name)
            return _original(value, attributes)

        monkeypatch.setattr(histogram, "record", spy)
    pool = poolkeeper.Pool(SQLITE, min_size=1, max_size=1, name="buffered")
    with otel.instrument(pool, provider) as handle, pool:
        cycles = otel.FLUSH_AT * 3
        for _ in range(cycles):
            with pool.connection():
                pass
        # The flush thread drains the buffers without any collection...
        deadline = time.monotonic() + 5.0
        while _buffered(handle) >= otel.FLUSH_AT and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _buffered(handle) < otel.FLUSH_AT
        assert recorded_in == {"poolkeeper-otel-flush"}
        # ...and a collection reports every duration that happened before it.
        points = otel_points(reader)
        attrs = {NAME: "buffered"}
        assert (
            otel_point(points, "db.client.connection.wait_time", attrs).count == cycles
        )
        assert (
            otel_point(points, "db.client.connection.use_time", attrs).count == cycles
        )
        assert _buffered(handle) == 0
    # With no more work the flush thread ends on its own.
    deadline = time.monotonic() + 5.0
    while _flush_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _flush_threads()


def test_collection_waits_for_a_flush_in_progress(reader, provider, monkeypatch):
    # The flush thread pops a duration, then records it: a collection in
    # between must wait for that record, or the duration is missing from it.
    warmup = poolkeeper.Pool(SQLITE, name="warmup")
    otel.instrument(warmup, provider, histograms=False).uninstrument()
    histogram = otel._providers[provider].wait_time
    original = histogram.record
    in_flight = threading.Event()

    def slow_in_flush_thread(value, attributes=None, context=None):
        flushing = threading.current_thread().name == "poolkeeper-otel-flush"
        if flushing and not in_flight.is_set():
            in_flight.set()
            time.sleep(0.5)  # holds one popped duration while main collects
        return original(value, attributes)

    monkeypatch.setattr(histogram, "record", slow_in_flush_thread)
    pool = poolkeeper.Pool(SQLITE, min_size=1, max_size=1, name="inflight")
    with otel.instrument(pool, provider), pool:
        cycles = otel.FLUSH_AT
        for _ in range(cycles):
            with pool.connection():
                pass
        assert in_flight.wait(5.0)
        points = otel_points(reader)
    wait = otel_point(points, "db.client.connection.wait_time", {NAME: "inflight"})
    assert wait.count == cycles


def test_uninstrument_records_what_is_still_buffered(reader, provider):
    pool = poolkeeper.Pool(SQLITE, min_size=1, max_size=1, name="tail")
    with pool:
        pool.open(wait=True, timeout=5.0)  # its connect event comes before
        handle = otel.instrument(pool, provider)
        for _ in range(5):  # below FLUSH_AT: nothing wakes the flush thread
            with pool.connection():
                pass
        assert _buffered(handle) == 10
        handle.uninstrument()
    points = otel_points(reader)
    wait = otel_find(points, "db.client.connection.wait_time", {NAME: "tail"})
    assert wait is not None and wait.count == 5


def test_query_timeouts(reader, provider):
    # A callable pool over sqlite3: the watchdog counts a connection held past
    # query_timeout as stuck (the generic adapter cannot tell busy from idle).
    import sqlite3

    with (
        poolkeeper.Pool(
            lambda: sqlite3.connect(":memory:", check_same_thread=False),
            min_size=1,
            query_timeout=0.05,
            name="qt",
        ) as pool,
        otel.instrument(pool, provider),
    ):
        held = pool.acquire()
        time.sleep(0.3)
        pool.release(held)
        points = otel_points(reader)
    assert otel_point(points, "poolkeeper.query_timeouts", {NAME: "qt"}).value == 1
