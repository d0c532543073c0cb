"""The Prometheus exporter, checked by scraping real registries."""

from __future__ import annotations

import importlib
import sys
import threading

import pytest
from prometheus_client import REGISTRY, CollectorRegistry

import poolkeeper
from poolkeeper.metrics import prometheus
from poolkeeper.metrics.base import BucketHistogram

from .helpers import RecordingPool, event, has_pool, scrape, value

SQLITE = "sqlite:///:memory:"


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def test_gauges_and_counters_follow_known_operations(registry):
    # Registered before the pool opens, so the first connect is timed too.
    pool = poolkeeper.Pool(SQLITE, min_size=1, max_size=2, name="main")
    with prometheus.register(pool, registry), pool:
        pool.open(wait=True, timeout=5.0)
        for _ in range(3):
            with pool.connection() as conn:
                conn.execute("SELECT 1")
        held = pool.acquire()
        try:
            text, samples, types = scrape(registry)
        finally:
            pool.release(held)

    assert "# TYPE poolkeeper_connections gauge" in text
    assert 'poolkeeper_connections{pool="main",state="used"} 1.0' in text
    assert value(samples, "poolkeeper_connections", pool="main", state="idle") == 0
    assert value(samples, "poolkeeper_connections_max", pool="main") == 2
    assert value(samples, "poolkeeper_connections_min", pool="main") == 1
    assert value(samples, "poolkeeper_pending_requests", pool="main") == 0
    assert value(samples, "poolkeeper_acquires_total", pool="main") == 4
    assert value(samples, "poolkeeper_timeouts_total", pool="main") == 0
    assert value(samples, "poolkeeper_connect_errors_total", pool="main") == 0
    assert value(samples, "poolkeeper_connections_created_total", pool="main") == 1
    assert types["poolkeeper_acquires"] == "counter"
    assert types["poolkeeper_wait_seconds"] == "histogram"
    # Every checkout is timed, every checkin, every connect.
    assert value(samples, "poolkeeper_wait_seconds_count", pool="main") == 4
    assert value(samples, "poolkeeper_use_seconds_count", pool="main") == 3
    assert value(samples, "poolkeeper_connect_seconds_count", pool="main") == 1
    assert value(samples, "poolkeeper_wait_seconds_bucket", pool="main", le="+Inf") == 4
    assert value(samples, "poolkeeper_use_seconds_sum", pool="main") > 0


def test_close_reasons_start_at_zero_and_count(registry):
    with (
        poolkeeper.Pool(SQLITE, min_size=0, max_size=1, max_uses=1, name="u") as pool,
        prometheus.register(pool, registry),
    ):
        _, before, _ = scrape(registry)
        with pool.connection():
            pass
        _, after, _ = scrape(registry)
    for reason in ("lifetime", "idle", "uses", "broken", "check", "error"):
        labels = {"pool": "u", "reason": reason}
        assert value(before, "poolkeeper_connections_closed_total", **labels) == 0
    assert (
        value(after, "poolkeeper_connections_closed_total", pool="u", reason="uses")
        == 1
    )


def test_timeouts_are_counted_and_timed(registry):
    with (
        poolkeeper.Pool(SQLITE, min_size=1, max_size=1, name="t") as pool,
        prometheus.register(pool, registry),
    ):
        held = pool.acquire()
        try:
            with pytest.raises(poolkeeper.PoolTimeout):
                pool.acquire(timeout=0.01)
            _, samples, _ = scrape(registry)
        finally:
            pool.release(held)
    assert value(samples, "poolkeeper_timeouts_total", pool="t") == 1
    # A timed-out caller got no connection: no checkout to time.
    assert value(samples, "poolkeeper_wait_seconds_count", pool="t") == 1


def test_two_pools_share_one_family(registry):
    with (
        poolkeeper.Pool(SQLITE, max_size=1, name="a") as a,
        poolkeeper.Pool(SQLITE, max_size=3, name="b") as b,
        prometheus.register(a, registry),
        prometheus.register(b, registry),
    ):
        text, samples, _ = scrape(registry)
    assert text.count("# TYPE poolkeeper_connections_max gauge") == 1
    assert value(samples, "poolkeeper_connections_max", pool="a") == 1
    assert value(samples, "poolkeeper_connections_max", pool="b") == 3


def test_duplicate_pool_name_is_refused(registry):
    with (
        poolkeeper.Pool(SQLITE, name="same") as a,
        poolkeeper.Pool(SQLITE, name="same") as b,
    ):
        recording = RecordingPool(b)
        with prometheus.register(a, registry):
            with pytest.raises(poolkeeper.ConfigError, match="same"):
                prometheus.register(recording, registry)
            with pytest.raises(poolkeeper.ConfigError):
                prometheus.register(a, registry)
        assert recording.listeners == []


def test_unregister_removes_listeners_series_and_collector(registry):
    with poolkeeper.Pool(SQLITE, name="gone") as pool:
        recording = RecordingPool(pool)
        handle = prometheus.register(recording, registry)
        assert {kind for kind, _ in recording.listeners} == {
            "checkout",
            "checkin",
            "connect",
        }
        _, samples, _ = scrape(registry)
        assert has_pool(samples, "gone")
        handle.unregister()
        handle.unregister()
        assert recording.listeners == []
        text, samples, _ = scrape(registry)
        assert text == ""
        # The registry is reusable afterwards.
        with prometheus.register(pool, registry):
            assert has_pool(scrape(registry)[1], "gone")


def test_without_histograms_no_listener_is_added(registry):
    with poolkeeper.Pool(SQLITE, name="cheap") as pool:
        recording = RecordingPool(pool)
        with prometheus.register(recording, registry, histograms=False):
            assert recording.listeners == []
            with pool.connection():
                pass
            text, samples, _ = scrape(registry)
    assert value(samples, "poolkeeper_acquires_total", pool="cheap") == 1
    assert "poolkeeper_wait_seconds" in text  # declared, with no series
    assert not any(name.startswith("poolkeeper_wait_seconds_") for name, _ in samples)


def test_default_registry():
    with poolkeeper.Pool(SQLITE, name="default-registry") as pool:
        handle = prometheus.register(pool)
        try:
            assert handle.registry is REGISTRY
            assert has_pool(scrape(REGISTRY)[1], "default-registry")
        finally:
            handle.unregister()
        assert not has_pool(scrape(REGISTRY)[1], "default-registry")


def test_name_clash_with_an_existing_metric_is_reported(registry):
    from prometheus_client import Gauge

    Gauge("poolkeeper_connections", "someone else's", registry=registry)
    with poolkeeper.Pool(SQLITE, name="clash") as pool:
        recording = RecordingPool(pool)
        with pytest.raises(ValueError, match="Duplicated"):
            prometheus.register(recording, registry)
        assert recording.listeners == []


def test_histogram_threads_lose_no_observation(registry):
    threads_n, cycles = 4, 500
    with (
        poolkeeper.Pool(
            SQLITE, min_size=0, max_size=threads_n, timeout=30.0, name="threads"
        ) as pool,
        prometheus.register(pool, registry),
    ):

        def work() -> None:
            for _ in range(cycles):
                with pool.connection():
                    pass

        workers = [threading.Thread(target=work) for _ in range(threads_n)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        _, samples, _ = scrape(registry)
    total = threads_n * cycles
    assert value(samples, "poolkeeper_acquires_total", pool="threads") == total
    assert value(samples, "poolkeeper_wait_seconds_count", pool="threads") == total
    assert value(samples, "poolkeeper_use_seconds_count", pool="threads") == total


@pytest.mark.anyio
async def test_async_pool():
    registry = CollectorRegistry()
    async with poolkeeper.AsyncPool(
        "sqlite+aiosqlite:///:memory:", min_size=1, max_size=2, name="aio"
    ) as pool:
        with prometheus.register(pool, registry):
            for _ in range(2):
                async with pool.connection():
                    pass
            conn = await pool.acquire()
            _, samples, _ = scrape(registry)
            await pool.release(conn)
    assert value(samples, "poolkeeper_connections", pool="aio", state="used") == 1
    assert value(samples, "poolkeeper_acquires_total", pool="aio") == 3
    assert value(samples, "poolkeeper_use_seconds_count", pool="aio") == 2


def test_bucket_boundaries_are_inclusive():
    histogram = BucketHistogram((0.1, 1.0))
    for duration in (0.05, 0.1, 0.5, 1.0, 2.0):
        histogram.observe(event("checkin", duration))
    counts, total = histogram.snapshot()
    assert counts == [2, 4, 5]  # le=0.1, le=1.0, +Inf (cumulative)
    assert total == pytest.approx(3.65)


@pytest.mark.parametrize("bounds", [(), (1.0, 1.0), (2.0, 1.0)])
def test_bucket_bounds_are_validated(bounds):
    with pytest.raises(ValueError, match="strictly increasing"):
        BucketHistogram(bounds)


def test_missing_prometheus_client_names_the_extra(monkeypatch):
    for name in [m for m in sys.modules if m.split(".")[0] == "prometheus_client"]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    monkeypatch.delitem(sys.modules, "poolkeeper.metrics.prometheus")
    with pytest.raises(poolkeeper.ConfigError, match=r"poolkeeper\[prometheus\]"):
        importlib.import_module("poolkeeper.metrics.prometheus")
