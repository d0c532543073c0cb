"""Callback registries that remember what they held when the pool took the connection.

A driver keeps a borrower's callbacks (psycopg's notice handlers, asyncpg's
termination listeners, ...) in a plain list or set on the connection. The
pool must drop those a borrower added before the next borrower gets the
connection, but keep those the pool's ``configure`` hook installed, and it
must tell the two cases apart on every return without I/O and without
comparing contents.

:func:`keep` swaps such a registry for a :class:`KeptList` or :class:`KeptSet`
holding the same callbacks: it records them as the baseline and raises its
``changed`` flag on every later ``append``/``add``/``remove``/``discard``
(the methods the drivers call, in Python). An adapter's idle check reads
``registry.changed`` directly (the pool calls the adapter's ``baseline``
before a connection is first handed out), and :func:`restore` puts the
baseline back.
"""

from __future__ import annotations

from typing import Any


class KeptList(list[Any]):
    """A list of callbacks that flags any change to its baseline."""

    __slots__ = ("changed", "kept")

    def __init__(self, items: Any = ()) -> None:
        super().__init__(items)
        self.kept: tuple[Any, ...] = tuple(self)
        self.changed = False

    def append(self, item: Any) -> None:
        """Add a callback and flag the change."""
        self.changed = True
        super().append(item)

    def remove(self, item: Any) -> None:
        """Remove a callback and flag the change."""
        self.changed = True
        super().remove(item)

    def restore(self) -> None:
        """Put back the baseline and clear the flag."""
        self[:] = self.kept
        self.changed = False


class KeptSet(set[Any]):
    """A set of callbacks that flags any change to its baseline."""

    __slots__ = ("changed", "kept")

    def __init__(self, items: Any = ()) -> None:
        super().__init__(items)
        self.kept: frozenset[Any] = frozenset(self)
        self.changed = False

    def add(self, item: Any) -> None:
        """Add a callback and flag the change."""
        self.changed = True
        super().add(item)

    def discard(self, item: Any) -> None:
        """Remove a callback (if present) and flag the change."""
        self.changed = True
        super().discard(item)

    def remove(self, item: Any) -> None:
        """Remove a callback and flag the change."""
        self.changed = True
        super().remove(item)

    def restore(self) -> None:
        """Put back the baseline and clear the flag."""
        super().clear()
        self.update(self.kept)
        self.changed = False


def keep(obj: Any, attr: str) -> None:
    """Replace the registry ``obj.<attr>`` with a kept copy (its baseline: now)."""
    current = getattr(obj, attr)
    kept = KeptSet(current) if isinstance(current, set) else KeptList(current)
    setattr(obj, attr, kept)


def restore(obj: Any, attr: str) -> None:
    """Put the registry ``obj.<attr>`` back to its baseline (empty if it has none)."""
    registry = getattr(obj, attr)
    if isinstance(registry, KeptList | KeptSet):
        registry.restore()
    else:
        registry.clear()
