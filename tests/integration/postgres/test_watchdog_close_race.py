"""The query watchdog never reads a psycopg2 connection while the pool closes it.

The watchdog (``query_timeout``) probes checked-out connections from the
housekeeper thread, reading libpq's state (``get_transaction_status``,
``fileno``) without psycopg2's connection lock. If the holder returns the
connection meanwhile and the pool retires and closes it (here ``max_uses=1``),
``close()`` frees libpq's connection while the probe may still be reading it.
The probes and the pool's closes are serialized: a close waits for a probe in
progress, and a probe skips a connection already retired.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import poolkeeper
from tests.conftest import import_driver

pytestmark = [pytest.mark.integration, pytest.mark.postgres]


@pytest.mark.timeout(30)
def test_a_watchdog_probe_never_overlaps_the_pool_closing_that_connection(
    request: pytest.FixtureRequest, postgres_url: str
) -> None:
    import_driver(request.config, "psycopg2")
    url = postgres_url.replace("://", "+psycopg2://", 1)
    pool: poolkeeper.Pool[Any] = poolkeeper.Pool(
        url, min_size=0, max_size=1, max_uses=1, query_timeout=30
    )
    assert pool._query_watch is not None
    busy, quiet, abort = pool._query_watch
    probing = threading.Event()
    seen: list[tuple[int, int]] = []

    def slow_busy(conn: Any) -> bool:
        # A probe that takes a while, as one preempted between two reads.
        before = conn.closed
        probing.set()
        time.sleep(0.3)
        seen.append((before, conn.closed))
        return bool(busy(conn))

    watch = (slow_busy, quiet, abort)
    with pool:
        conn = pool.acquire(timeout=5)
        prober = threading.Thread(target=pool._watch_queries, args=(watch,))
        prober.start()
        assert probing.wait(5)
        pool.release(conn)  # max_uses=1: retired and closed on return
        prober.join(5)
        assert conn.closed
    assert seen == [(0, 0)], "the connection was closed during a probe"
