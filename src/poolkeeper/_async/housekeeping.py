"""The housekeeper: periodic retirement of stale idle connections and refill.

It holds only a weak reference to its pool between rounds, so a pool that is
dropped without being closed can still be garbage collected; the housekeeper
then stops on its own.
"""

from __future__ import annotations

import logging
import traceback
import weakref
from typing import TYPE_CHECKING, Any

from poolkeeper._concurrency import aspawn
from poolkeeper._config import scrub

if TYPE_CHECKING:
    from poolkeeper._async.pool import AsyncPool

logger = logging.getLogger("poolkeeper.pool")


class AsyncHousekeeper:
    """Runs ``pool._housekeep()`` every few seconds until the pool closes."""

    def __init__(self, pool: AsyncPool[Any]) -> None:
        self._pool_ref = weakref.ref(pool)
        self._closing = pool._closing
        self._interval = pool._state.housekeeping_interval()
        self._name = pool.name
        self.handle: Any = None

    def start(self) -> None:
        """Start the background loop."""
        self.handle = aspawn(self._run, name=f"poolkeeper-housekeeper-{self._name}")

    async def _run(self) -> None:
        while not await self._closing.wait(self._interval):
            pool = self._pool_ref()
            if pool is None:
                return
            try:
                await pool._housekeep()
            except Exception as exc:
                # The traceback's text is masked like every other message: a
                # driver error may quote the connection string.
                logger.error(
                    "pool %r: housekeeping failed:\n%s",
                    self._name,
                    scrub("".join(traceback.format_exception(exc)), pool._secrets),
                )
            del pool
