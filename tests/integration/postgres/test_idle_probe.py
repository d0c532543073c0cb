"""The C-level idle probes of the psycopg drivers agree with ``is_idle``."""

from __future__ import annotations

from typing import Any

import psycopg
import psycopg2

from poolkeeper.drivers.base import idle_probe
from poolkeeper.drivers.psycopg import PsycopgDriver
from poolkeeper.drivers.psycopg2 import Psycopg2Driver


def _check(driver: Any, conn: Any, start_transaction: Any) -> None:
    probe, value = idle_probe(driver)
    assert probe is not driver.is_idle
    assert driver.is_idle(conn) and probe(conn) == value
    start_transaction(conn)
    assert not driver.is_idle(conn) and probe(conn) != value
    conn.rollback()
    assert probe(conn) == value
    conn.close()
    assert not driver.is_idle(conn) and probe(conn) != value


def test_psycopg_probe(postgres_url: str) -> None:
    driver = PsycopgDriver(lambda: psycopg.connect(postgres_url))
    _check(driver, driver.connect(), lambda c: c.execute("SELECT 1"))


def test_psycopg2_probe(postgres_url: str) -> None:
    driver = Psycopg2Driver(lambda: psycopg2.connect(postgres_url))
    _check(driver, driver.connect(), lambda c: c.cursor().execute("SELECT 1"))
