"""The persistent strategy: one long-lived connection per thread (or asyncio task).

This is the "keep a connection open per worker" pattern (psycopg2 keepalives
and a global connection) made safe: each thread or task is pinned to one
connection from an inner pool, which bounds how many exist (``max_size``),
recycles them (lifetime, uses), checks them after idleness, replaces broken
ones, and takes each back automatically when its thread or task ends.

A thread's pin lives in ``threading.local`` storage, which CPython clears when
the thread exits; a finalizer on the pin then gives the connection back. A
task's pin is given back by a done-callback on the task.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from poolkeeper._async.pool import AsyncPool
from poolkeeper._concurrency import IS_ASYNC, aspawn
from poolkeeper._core.stats import PoolStats
from poolkeeper.drivers.base import TxStatus

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from poolkeeper._options import PoolOptions

ConnT = TypeVar("ConnT")


class _Pin:
    """A connection pinned to one owner, and how deeply it is borrowed."""

    __slots__ = ("__weakref__", "conn", "depth", "finalizer", "used_at")

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.depth = 0
        self.used_at = time.monotonic()
        self.finalizer: Any = None


class AsyncPersistentPool(Generic[ConnT]):
    """A pool that gives each thread (or asyncio task) its own lasting connection.

    Takes the same arguments as the regular pool (``connect`` and the
    :class:`~poolkeeper.PoolOptions`). ``connection()`` returns the
    caller's pinned connection, committing or rolling back at the end of the
    outermost block but keeping the connection pinned; ``release(conn)``
    unpins it early. A pinned connection unused for ``validate_after``
    seconds (default 0.5) is pinged before reuse, and a broken one is
    replaced.
    """

    def __init__(
        self: AsyncPersistentPool[Any], connect: Any, **options: Unpack[PoolOptions]
    ) -> None:
        self.pool: AsyncPool[ConnT] = AsyncPool(connect, **options)
        self._validate_after = self.pool._config.validate_after
        self._local = threading.local()
        self._task_pins: weakref.WeakKeyDictionary[Any, _Pin] = (
            weakref.WeakKeyDictionary()
        )

    @property
    def name(self) -> str:
        """The inner pool's name."""
        return self.pool.name

    async def open(self, wait: bool = False, timeout: float | None = None) -> None:
        """Open the inner pool (see the regular pool's ``open``)."""
        await self.pool.open(wait=wait, timeout=timeout)

    async def close(self, timeout: float = 5.0) -> None:
        """Close the inner pool; pinned connections close when given back."""
        await self.pool.close(timeout)

    async def __aenter__(self) -> AsyncPersistentPool[ConnT]:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def stats(self) -> PoolStats:
        """The inner pool's statistics (pinned connections count as in use)."""
        return self.pool.stats()

    def connection(self, timeout: float | None = None) -> AsyncPinnedContext[ConnT]:
        """Use this thread's (or task's) connection for a ``with`` block."""
        return AsyncPinnedContext(self, timeout)

    async def acquire(self, timeout: float | None = None) -> ConnT:
        """Return this thread's (or task's) connection, pinning one if needed."""
        pin = await self._pin(timeout)
        return pin.conn  # type: ignore[no-any-return]

    async def release(self, conn: ConnT) -> None:
        """Unpin ``conn`` now and give it back to the inner pool."""
        pin = self._current()
        if pin is not None and pin.conn is conn:
            self._forget()
        await self.pool.release(conn)

    # -- pins --------------------------------------------------------------------

    def _current(self) -> _Pin | None:
        if IS_ASYNC:
            return self._task_pins.get(asyncio.current_task())
        else:
            return getattr(self._local, "pin", None)

    def _forget(self) -> None:
        """Unpin the caller's connection without giving it back."""
        if IS_ASYNC:
            self._task_pins.pop(asyncio.current_task(), None)
        else:
            pin = getattr(self._local, "pin", None)
            if pin is not None:
                pin.finalizer.detach()
            self._local.pin = None

    async def _pin(self, timeout: float | None) -> _Pin:
        pin = self._current()
        if pin is not None:
            if await self._still_good(pin):
                pin.used_at = time.monotonic()
                return pin
            self._forget()
            await self.pool.release(pin.conn)
        conn = await self.pool.acquire(timeout)
        pin = _Pin(conn)
        self._remember(pin)
        return pin

    async def _still_good(self, pin: _Pin) -> bool:
        driver = self.pool._driver
        if driver.is_broken(pin.conn):
            return False
        if time.monotonic() - pin.used_at >= self._validate_after:
            try:
                await driver.ping(pin.conn)
            except Exception:
                return False
        return True

    def _remember(self, pin: _Pin) -> None:
        if IS_ASYNC:
            task = asyncio.current_task()
            assert task is not None, "use the pool from inside a task"
            self._task_pins[task] = pin

            def task_done(done: Any) -> None:
                # Only if the task still holds this pin (not released early).
                if self._task_pins.pop(done, None) is pin:
                    aspawn(self.pool.release, pin.conn)

            task.add_done_callback(task_done)
        else:
            self._local.pin = pin
            # Thread-local storage is cleared when the thread exits, which
            # drops the pin and runs this finalizer (detached on early release).
            pin.finalizer = weakref.finalize(pin, self._thread_gone, pin.conn)

    if not IS_ASYNC:

        def _thread_gone(self, conn: Any) -> None:
            self.pool.release(conn)

    async def _end_block(self, pin: _Pin, ok: bool) -> None:
        """End of the outermost ``with``: settle the transaction, keep the pin."""
        driver = self.pool._driver
        if driver.is_broken(pin.conn):
            self._forget()
            await self.pool.release(pin.conn)
            return
        status = driver.transaction_status(pin.conn)
        if status is TxStatus.IDLE:
            return
        if ok and status is not TxStatus.INERROR:
            await driver.commit(pin.conn)
        else:
            await driver.rollback(pin.conn)


class AsyncPinnedContext(Generic[ConnT]):
    """What the persistent pool's ``connection()`` returns."""

    __slots__ = ("_owner", "_pin", "_timeout")

    def __init__(
        self, owner: AsyncPersistentPool[ConnT], timeout: float | None
    ) -> None:
        self._owner = owner
        self._timeout = timeout

    async def __aenter__(self) -> ConnT:
        self._pin = await self._owner._pin(self._timeout)
        self._pin.depth += 1
        return self._pin.conn  # type: ignore[no-any-return]

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        pin = self._pin
        pin.depth -= 1
        pin.used_at = time.monotonic()
        if pin.depth == 0:
            await self._owner._end_block(pin, exc_type is None)
