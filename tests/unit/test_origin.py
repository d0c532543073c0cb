"""Which errors count as the driver's (query_timeout turns those into QueryTimeout)."""

from __future__ import annotations

import builtins
import sqlite3
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from poolkeeper import PoolTimeout
from poolkeeper._origin import from_driver

# An application package that subclasses the driver's connection class, as
# ``class MyConn(sqlite3.Connection)`` in a module ``myapp.db`` would.
MyConn = type("MyConn", (sqlite3.Connection,), {"__module__": "myapp.db"})
AppError = type("AppError", (Exception,), {"__module__": "myapp.errors"})


@pytest.fixture
def conn() -> Iterator[sqlite3.Connection]:
    connection: sqlite3.Connection = sqlite3.connect(":memory:", factory=MyConn)
    yield connection
    connection.close()


def test_an_application_subclass_does_not_make_its_errors_the_driver_s(conn) -> None:
    assert not from_driver(AppError("the application's"), conn)
    assert from_driver(sqlite3.OperationalError("the driver's"), conn)


def test_the_cause_chain_is_followed(conn) -> None:
    with pytest.raises(AppError) as raised:  # noqa: PT012
        try:
            conn.execute("SELECT * FROM no_such_table")
        except sqlite3.OperationalError as exc:
            raise AppError("wrapped") from exc
    assert from_driver(raised.value, conn)
    # Only __cause__ (an explicit "raise ... from"), and poolkeeper's own
    # errors never count.
    assert not from_driver(AppError("alone"), conn)
    timeout = PoolTimeout("pool 'p' timed out")
    assert not from_driver(timeout, conn)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="ExceptionGroup is 3.11+")
def test_exception_groups_are_searched(conn) -> None:
    group_type: Any = getattr(builtins, "ExceptionGroup")  # noqa: B009 (3.11+)
    group = group_type("task group", [AppError("one"), sqlite3.OperationalError("2")])
    assert from_driver(group, conn)
    assert not from_driver(group_type("g", [AppError("x")]), conn)


def test_a_generic_driver_s_own_package_still_counts() -> None:
    Generic = type("Conn", (), {"__module__": "somedb.core"})
    SomeError = type("Error", (Exception,), {"__module__": "somedb.errors"})
    assert from_driver(SomeError("x"), Generic())
    assert from_driver(ConnectionResetError("cut"), Generic())
    assert not from_driver(TimeoutError("the application's deadline"), Generic())
