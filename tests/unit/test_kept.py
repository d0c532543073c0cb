"""Callback registries that remember their baseline (``poolkeeper.drivers._kept``)."""

from __future__ import annotations

from typing import Any

import pytest

from poolkeeper.drivers._kept import KeptList, KeptSet, keep, restore


class Conn:
    """A driver connection with a list and a set of callbacks."""

    def __init__(self) -> None:
        self.handlers: Any = [print]
        self.listeners: Any = {repr}


def test_keep_remembers_what_configure_installed() -> None:
    conn = Conn()
    keep(conn, "handlers")
    keep(conn, "listeners")
    assert isinstance(conn.handlers, KeptList) and conn.handlers == [print]
    assert isinstance(conn.listeners, KeptSet) and conn.listeners == {repr}
    assert not conn.handlers.changed and not conn.listeners.changed


@pytest.mark.parametrize(
    "change",
    [
        lambda c: c.handlers.append(len),
        lambda c: c.handlers.remove(print),
        lambda c: c.listeners.add(len),
        lambda c: c.listeners.discard(repr),
        lambda c: c.listeners.remove(repr),
    ],
)
def test_a_borrower_change_is_flagged_and_undone(change: Any) -> None:
    conn = Conn()
    keep(conn, "handlers")
    keep(conn, "listeners")
    change(conn)
    assert conn.handlers.changed or conn.listeners.changed
    restore(conn, "handlers")
    restore(conn, "listeners")
    assert conn.handlers == [print] and conn.listeners == {repr}
    assert not conn.handlers.changed and not conn.listeners.changed


def test_a_registry_without_baseline_is_emptied() -> None:
    conn = Conn()
    restore(conn, "handlers")
    assert conn.handlers == []
