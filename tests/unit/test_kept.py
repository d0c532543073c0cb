"""Callback registries that remember their baseline (``poolkeeper.drivers._kept``)."""

from __future__ import annotations

from typing import Any

import pytest

from poolkeeper.drivers._kept import KeptList, KeptSet, changed, keep, restore


class Conn:
    """A driver connection with a list and a set of callbacks."""

    def __init__(self) -> None:
        self.handlers: list[Any] = [print]
        self.listeners: set[Any] = {repr}


def test_keep_remembers_what_configure_installed() -> None:
    conn = Conn()
    keep(conn, "handlers")
    keep(conn, "listeners")
    assert isinstance(conn.handlers, KeptList) and conn.handlers == [print]
    assert isinstance(conn.listeners, KeptSet) and conn.listeners == {repr}
    assert not changed(conn.handlers) and not changed(conn.listeners)


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
    assert changed(conn.handlers) or changed(conn.listeners)
    restore(conn, "handlers")
    restore(conn, "listeners")
    assert conn.handlers == [print] and conn.listeners == {repr}
    assert not changed(conn.handlers) and not changed(conn.listeners)


def test_a_registry_without_baseline_counts_as_changed_when_not_empty() -> None:
    conn = Conn()
    assert changed(conn.handlers)
    restore(conn, "handlers")
    assert conn.handlers == []
    assert not changed(conn.handlers)
