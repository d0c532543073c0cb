"""The ``is_idle`` return-path check: a driver's own, or the protocol fallback."""

from __future__ import annotations

import sqlite3
from typing import Any

from poolkeeper.drivers.base import TxStatus, idle_check, idle_probe
from poolkeeper.drivers.sqlite3 import Sqlite3Driver


class ProtocolOnly:
    """A driver with only the protocol methods (no ``is_idle``)."""

    name = "fake"
    is_async = False

    def __init__(self) -> None:
        self.broken = False
        self.status = TxStatus.IDLE

    def is_broken(self, conn: Any) -> bool:
        return self.broken

    def transaction_status(self, conn: Any) -> TxStatus:
        return self.status


def test_fallback_is_idle_only_when_open_and_outside_a_transaction() -> None:
    driver = ProtocolOnly()
    is_idle = idle_check(driver)  # type: ignore[arg-type]
    assert is_idle(object())
    for status in (TxStatus.INTRANS, TxStatus.INERROR, TxStatus.UNKNOWN):
        driver.status = status
        assert not is_idle(object())
    driver.status = TxStatus.IDLE
    driver.broken = True
    assert not is_idle(object())


def test_fallback_on_a_real_driver() -> None:
    driver = Sqlite3Driver(lambda: sqlite3.connect(":memory:"))
    is_idle = idle_check(driver)
    conn = driver.connect()
    assert is_idle(conn)
    conn.execute("CREATE TABLE t (x)")
    conn.execute("INSERT INTO t VALUES (1)")
    assert not is_idle(conn)  # a transaction is open
    conn.rollback()
    assert is_idle(conn)
    conn.close()
    assert not is_idle(conn)


def test_a_driver_own_check_is_used() -> None:
    class Fast(ProtocolOnly):
        @staticmethod
        def is_idle(conn: Any) -> bool:
            return False

    assert idle_check(Fast()) is Fast.is_idle  # type: ignore[arg-type]


def test_idle_probe_prefers_the_driver_probe_then_is_idle() -> None:
    class Probed(ProtocolOnly):
        idle_probe = staticmethod(len)
        idle_value = 0

    assert idle_probe(Probed()) == (len, 0)  # type: ignore[arg-type]
    probe, value = idle_probe(ProtocolOnly())  # type: ignore[arg-type]
    assert value is True and probe(object()) == value
