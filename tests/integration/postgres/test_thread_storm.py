"""RELIABILITY_PLAN S8, thread storm: 200 threads on a pool of 5, fair hand-off.

Each thread does 50 checkouts that hold the connection 1-5 ms (a sleep: the
GIL is free meanwhile); 20 of the threads ask with ``timeout=0.05``, so most
of their checkouts time out. The interpreter switches threads every
microsecond to shake out races. The plan's figures: done within 18 s (3x the
ideal 10,000 x 3 ms / 5 = 6 s); never more than 5 connections lent nor 5
server sessions; wait p99 at most 3x the median (FIFO: every caller waits
about as long); no wait longer than the timeout; the short-timeout checkouts
fail in [0.05, 0.10] s; every other checkout succeeds; nothing left over.
"""

from __future__ import annotations

import random
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import poolkeeper
from poolkeeper import PoolTimeout
from tests.integration.postgres.conftest import backends
from tests.support.waiting import settle

pytestmark = pytest.mark.slow

THREADS = 200
SHORT = 20  # threads with timeout=0.05
CYCLES = 50
SIZE = 5
TIMEOUT = 30.0


@pytest.fixture
def fast_switching() -> Iterator[None]:
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


@pytest.mark.timeout(120)
def test_thread_storm_is_fair_bounded_and_settles(
    postgres_url: str, app_name: str, admin: Any, fast_switching: None
) -> None:
    pool = poolkeeper.Pool(
        postgres_url,
        min_size=SIZE,
        max_size=SIZE,
        timeout=TIMEOUT,
        connect_args={"application_name": app_name},
    )
    pool.open(wait=True)
    lock = threading.Lock()
    waits: list[float] = []  # successful checkouts of the normal threads
    short_ok = 0
    short_timeouts: list[float] = []
    errors: list[BaseException] = []
    lent = 0
    peak_lent = 0
    peak_sessions = 0
    stop_sampling = threading.Event()

    def sample_sessions() -> None:
        nonlocal peak_sessions
        while not stop_sampling.is_set():
            peak_sessions = max(peak_sessions, backends(admin, app_name))
            time.sleep(0.02)

    def worker(i: int) -> None:
        nonlocal lent, peak_lent, short_ok
        rng = random.Random(i)
        short = i < SHORT
        for _ in range(CYCLES):
            started = time.monotonic()
            try:
                conn = pool.acquire(timeout=0.05 if short else None)
            except PoolTimeout:
                with lock:
                    short_timeouts.append(time.monotonic() - started)
                continue
            except BaseException as exc:  # recorded, then asserted on
                with lock:
                    errors.append(exc)
                return
            waited = time.monotonic() - started
            with lock:
                lent += 1
                peak_lent = max(peak_lent, lent)
                if short:
                    short_ok += 1
                else:
                    waits.append(waited)
            time.sleep(rng.uniform(0.001, 0.005))
            with lock:
                lent -= 1
            pool.release(conn)

    sampler = threading.Thread(target=sample_sessions)
    sampler.start()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    started = time.monotonic()
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(90)
        elapsed = time.monotonic() - started
    finally:
        stop_sampling.set()
        sampler.join(5)
    try:
        assert not any(t.is_alive() for t in threads), "threads still running"
        assert errors == [], "".join(
            __import__("traceback").format_exception(errors[0])
        )
        waits.sort()
        median = waits[len(waits) // 2]
        p99 = waits[int(len(waits) * 0.99)]
        report = (
            f"{elapsed:.1f} s; waits: median {median * 1000:.1f} ms, p99 "
            f"{p99 * 1000:.1f} ms, max {waits[-1] * 1000:.1f} ms; short: "
            f"{short_ok} ok, {len(short_timeouts)} timed out in "
            f"[{min(short_timeouts, default=0):.3f}, "
            f"{max(short_timeouts, default=0):.3f}] s"
        )
        print(report)
        # Every normal checkout succeeded; the short ones either way.
        assert len(waits) == (THREADS - SHORT) * CYCLES, report
        assert short_ok + len(short_timeouts) == SHORT * CYCLES, report
        assert elapsed < 18.0, report
        assert peak_lent <= SIZE and peak_sessions <= SIZE, (peak_lent, peak_sessions)
        assert p99 <= 3 * median, report
        assert waits[-1] < TIMEOUT, report
        # A timed-out wait ends at its deadline, give or take scheduling.
        assert short_timeouts, report
        assert all(0.05 <= t <= 0.10 for t in short_timeouts), report
        stats = pool.stats()
        assert stats.in_use == 0 and stats.waiting == 0 and stats.size == SIZE
        assert stats.timeouts == len(short_timeouts)
    finally:
        pool.close()
    assert settle(lambda: backends(admin, app_name) == 0)
