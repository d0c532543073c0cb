"""The idle probes of the sync PostgreSQL drivers agree with ``is_idle``.

A connection is idle (its return needs no work) when it is open, outside a
transaction, and carries nothing a borrower left on it: a handler added
after the pool's ``baseline`` (psycopg), received notices (psycopg2).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import psycopg2

from poolkeeper.drivers.base import idle_probe
from poolkeeper.drivers.psycopg import PsycopgDriver
from poolkeeper.drivers.psycopg2 import Psycopg2Driver


def _check(
    driver: Any,
    conn: Any,
    start_transaction: Callable[[Any], None],
    leave_state: Callable[[Any], None],
) -> None:
    probe, value = idle_probe(driver)
    baseline = getattr(driver, "baseline", None)
    if baseline is not None:
        baseline(conn)
    try:
        assert driver.is_idle(conn) and probe(conn) == value
        start_transaction(conn)
        assert not driver.is_idle(conn) and probe(conn) != value
        conn.rollback()
        assert probe(conn) == value
        leave_state(conn)
        assert not driver.is_idle(conn) and probe(conn) != value
        driver.clear_state(conn)
        assert probe(conn) == value
    finally:
        conn.close()
    assert not driver.is_idle(conn) and probe(conn) != value


def _notice(conn: Any) -> None:
    with conn.cursor() as cur:
        cur.execute("DO $$BEGIN RAISE NOTICE 'pk'; END$$")
    conn.rollback()


def test_psycopg_probe(postgres_url: str) -> None:
    driver = PsycopgDriver(lambda: psycopg.connect(postgres_url))
    _check(
        driver,
        driver.connect(),
        lambda c: c.execute("SELECT 1"),
        lambda c: c.add_notice_handler(print),
    )


def test_psycopg2_probe(postgres_url: str) -> None:
    driver = Psycopg2Driver(lambda: psycopg2.connect(postgres_url))
    _check(driver, driver.connect(), lambda c: c.cursor().execute("SELECT 1"), _notice)
