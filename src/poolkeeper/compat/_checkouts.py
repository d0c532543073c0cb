"""Bookkeeping shared by the asyncio drop-in layers: who holds which connection.

asyncpg's and aiopg's pools refuse to take back a connection they did not
hand out, let ``close()`` wait until every connection is back, and let
``terminate()`` drop the connections still out (releasing one of those later
does nothing). :class:`Checkouts` keeps that state for both layers.
"""

from __future__ import annotations

import asyncio
from typing import Any


class Checkouts:
    """The connections a drop-in pool has handed out and not yet taken back."""

    def __init__(self) -> None:
        self._held: dict[int, Any] = {}
        self._terminated: set[int] = set()
        # Taken back and still on their way into the pool (rollback, reset).
        self._returning = 0
        self.all_back = asyncio.Event()
        """Set while no connection is out or on its way back."""
        self.all_back.set()

    def add(self, conn: Any) -> None:
        """Record ``conn`` as handed out."""
        self._held[id(conn)] = conn
        self.all_back.clear()

    def take_back(self, conn: Any) -> bool:
        """Record ``conn`` as on its way back; call :meth:`returned` once
        it is back in the pool (``close()`` waits until then, as asyncpg's).

        Returns:
            True if the caller should give ``conn`` back to the pool (and
            then call :meth:`returned`); False if it was dropped by
            :meth:`drop_all` already (nothing to do).

        Raises:
            LookupError: ``conn`` was never handed out by this pool, or was
                already taken back.
        """
        if self._held.get(id(conn)) is not conn:
            if id(conn) in self._terminated:
                return False
            raise LookupError(conn)
        del self._held[id(conn)]
        self._returning += 1
        return True

    def returned(self) -> None:
        """Record that a connection taken back is back in the pool (or closed)."""
        self._returning -= 1
        if not self._held and not self._returning:
            self.all_back.set()

    def drop_all(self) -> list[Any]:
        """Forget every connection still out (``terminate()``); return them."""
        held = list(self._held.values())
        self._terminated.update(self._held)
        self._held.clear()
        if not self._returning:
            self.all_back.set()
        return held
