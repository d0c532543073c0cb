"""Prometheus and OpenTelemetry exporters over a real PostgreSQL server."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry

import poolkeeper
from poolkeeper.metrics import otel, prometheus
from tests.unit.metrics.helpers import otel_point, otel_points, scrape, value

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

UNREACHABLE = "postgresql://postgres@127.0.0.1:1/test"


@pytest.fixture
def otel_sdk() -> Iterator[tuple[MeterProvider, InMemoryMetricReader]]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    yield provider, reader
    provider.shutdown()


def test_prometheus_exposition(postgres_url):
    registry = CollectorRegistry()
    pool = poolkeeper.Pool(postgres_url, min_size=2, max_size=3, name="pg")
    with prometheus.register(pool, registry), pool:
        pool.open(wait=True, timeout=10.0)
        for _ in range(5):
            with pool.connection() as conn:
                conn.execute("SELECT pg_sleep(0.002)")
        held = pool.acquire()
        try:
            text, samples, _ = scrape(registry)
        finally:
            pool.release(held)
        pool.resize(min_size=1, max_size=1)
        _, resized, _ = scrape(registry)

    assert 'poolkeeper_connections{pool="pg",state="used"} 1.0' in text
    assert value(samples, "poolkeeper_connections", pool="pg", state="idle") == 1
    assert value(samples, "poolkeeper_acquires_total", pool="pg") == 6
    assert value(samples, "poolkeeper_connections_created_total", pool="pg") == 2
    assert value(samples, "poolkeeper_connect_seconds_count", pool="pg") == 2
    assert value(samples, "poolkeeper_connect_seconds_sum", pool="pg") > 0
    assert value(samples, "poolkeeper_use_seconds_count", pool="pg") == 5
    # Each use slept 2 ms: none fits in the 1 ms bucket.
    assert value(samples, "poolkeeper_use_seconds_bucket", pool="pg", le="0.001") == 0
    assert value(samples, "poolkeeper_use_seconds_sum", pool="pg") >= 0.01
    assert value(resized, "poolkeeper_connections_max", pool="pg") == 1
    closed = value(
        resized, "poolkeeper_connections_closed_total", pool="pg", reason="resize"
    )
    assert closed == 1


def test_connect_errors_and_timeouts_are_reported(postgres_url, otel_sdk):
    import psycopg

    provider, reader = otel_sdk
    registry = CollectorRegistry()
    with (
        poolkeeper.Pool(UNREACHABLE, min_size=0, max_size=1, name="down") as down,
        poolkeeper.Pool(postgres_url, min_size=0, max_size=1, name="busy") as busy,
        prometheus.register(down, registry),
        prometheus.register(busy, registry),
        otel.instrument(down, provider),
        otel.instrument(busy, provider),
    ):
        # A refused port on a server never reached: the driver's error, at once.
        with pytest.raises(psycopg.OperationalError):
            down.acquire(timeout=0.3)
        held = busy.acquire()
        with pytest.raises(poolkeeper.PoolTimeout):
            busy.acquire(timeout=0.1)
        busy.release(held)
        _, samples, _ = scrape(registry)
        points = otel_points(reader)
    assert value(samples, "poolkeeper_connect_errors_total", pool="down") >= 1
    assert value(samples, "poolkeeper_timeouts_total", pool="down") == 0
    assert value(samples, "poolkeeper_connections_created_total", pool="down") == 0
    assert value(samples, "poolkeeper_timeouts_total", pool="busy") == 1
    timeouts = otel_point(
        points, "db.client.connection.timeouts", {otel.POOL_NAME: "busy"}
    )
    assert timeouts.value == 1


def test_otel_over_postgres(postgres_url, otel_sdk):
    provider, reader = otel_sdk
    pool = poolkeeper.Pool(postgres_url, min_size=1, max_size=2, name="pg-otel")
    with otel.instrument(pool, provider), pool:
        pool.open(wait=True, timeout=10.0)
        for _ in range(4):
            with pool.connection() as conn:
                conn.execute("SELECT 1")
        points = otel_points(reader)
    attrs = {otel.POOL_NAME: "pg-otel"}
    idle = otel_point(
        points, "db.client.connection.count", {**attrs, otel.STATE: "idle"}
    )
    assert idle.value == 1
    assert otel_point(points, "db.client.connection.max", attrs).value == 2
    assert otel_point(points, "db.client.connection.create_time", attrs).count == 1
    assert otel_point(points, "db.client.connection.wait_time", attrs).count == 4
    assert otel_point(points, "db.client.connection.use_time", attrs).count == 4


@pytest.mark.anyio
async def test_async_pool_both_exporters(postgres_url, otel_sdk):
    provider, reader = otel_sdk
    registry = CollectorRegistry()
    url = "postgresql+asyncpg://" + postgres_url.partition("://")[2]
    pool = poolkeeper.AsyncPool(url, min_size=1, max_size=2, name="pg-async")
    with prometheus.register(pool, registry), otel.instrument(pool, provider):
        async with pool:
            for _ in range(3):
                async with pool.connection() as conn:
                    await conn.fetchval("SELECT 1")
            held = await pool.acquire()
            try:
                _, samples, _ = scrape(registry)
                points = otel_points(reader)
            finally:
                await pool.release(held)
    assert value(samples, "poolkeeper_acquires_total", pool="pg-async") == 4
    assert value(samples, "poolkeeper_use_seconds_count", pool="pg-async") == 3
    used = otel_point(
        points,
        "db.client.connection.count",
        {otel.POOL_NAME: "pg-async", otel.STATE: "used"},
    )
    assert used.value == 1


def _with_password(url: str, password: str, port: int | None = None) -> str:
    parts = urlsplit(url)
    host = f"{parts.hostname}:{port or parts.port or 5432}"
    netloc = f"{parts.username or 'postgres'}:{password}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


def test_no_secret_in_metric_labels_or_exports(postgres_url, otel_sdk):
    # The local server trusts every login, so any password connects.
    url_secret, token = "Url-Pw-7f3e91", "Provider-Token-52ab8c"
    provided = 0

    def provider() -> str:
        nonlocal provided
        provided += 1
        return token

    meter_provider, reader = otel_sdk
    registry = CollectorRegistry()
    pools = [
        # A URL with a password; the same URL plus a provider for it; the same
        # URL at a port where nothing listens, so failed connects are counted.
        poolkeeper.Pool(_with_password(postgres_url, url_secret), max_size=2),
        poolkeeper.Pool(
            _with_password(postgres_url, url_secret),
            max_size=2,
            connect_args={"password": provider},
        ),
        poolkeeper.Pool(_with_password(postgres_url, url_secret, port=1), min_size=0),
    ]
    exports = []
    try:
        for pool in pools:
            prometheus.register(pool, registry)
            otel.instrument(pool, meter_provider)
        for pool in pools[:2]:
            with pool.connection() as conn:
                conn.execute("SELECT 1")
        with pytest.raises(Exception, match=r"refused|failed"):
            pools[2].acquire(timeout=1.0)
        text, samples, _ = scrape(registry)
        data = reader.get_metrics_data()
        assert data is not None
        exports.append(data.to_json())
    finally:
        for pool in pools:
            pool.close()

    assert provided >= 1  # the provider's token was really used
    assert value(samples, "poolkeeper_connect_errors_total", pool=pools[2].name) >= 1
    labels = {v for _name, label_set in samples for _k, v in label_set}
    assert {p.name for p in pools} <= labels
    assert all(f'"{p.name}"' in exports[0] for p in pools)
    for secret in (url_secret, token):
        assert secret not in text
        assert not any(secret in label for label in labels)
        assert secret not in exports[0]
