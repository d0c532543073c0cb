"""A/B: OpenTelemetry histograms recorded inline on the caller's path vs buffered.

One thread loops ``with pool.connection(): SELECT 1`` on the local PostgreSQL
for 2 s per run, six interleaved rounds (rotated order) of three modes: no
instrumentation, the SDK's ``Histogram.record`` called from the checkout and
checkin listeners (how poolkeeper.metrics.otel worked before), and
``otel.instrument()`` (durations buffered, recorded at collection time or by
the flush thread). Prints median ops/s and the overhead against ``none``.

    PYTHONPATH=src python benchmarks/ab_otel_deferred.py
"""

from __future__ import annotations

import statistics
import time

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import poolkeeper
from poolkeeper.metrics import otel


def run(mode: str, seconds: float = 2.0) -> float:
    reader = InMemoryMetricReader()
    mp = MeterProvider(metric_readers=[reader])
    pool = poolkeeper.Pool(
        "postgresql://postgres@127.0.0.1:5432/test",
        min_size=1,
        max_size=1,
        name=f"ab-{mode}-{time.monotonic()}",
        connect_args={"autocommit": True},
    )
    with pool:
        pool.open(wait=True)
        handle = None
        if mode == "deferred":
            handle = otel.instrument(pool, mp)
        elif mode == "inline":
            inst = otel._Instruments(mp)
            for kind, h in (("checkout", inst.wait_time), ("checkin", inst.use_time)):
                rec = h.record
                attrs = {otel.POOL_NAME: pool.name}
                pool.on(kind, lambda e, rec=rec, attrs=attrs: rec(e.duration, attrs))
        n = 0
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            with pool.connection() as c:
                c.execute("SELECT 1").fetchone()
            n += 1
        reader.get_metrics_data()
        if handle:
            handle.uninstrument()
    mp.shutdown()
    return n / seconds


def main() -> None:
    res: dict[str, list[float]] = {m: [] for m in ("none", "inline", "deferred")}
    for r in range(6):
        order = list(res)[r % 3 :] + list(res)[: r % 3]
        for m in order:
            res[m].append(run(m))
    base = statistics.median(res["none"])
    for m, v in res.items():
        med = statistics.median(v)
        print(f"{m:9s} {med:8.0f} ops/s  overhead {base / med * 100 - 100:+.1f}%")


if __name__ == "__main__":
    main()
