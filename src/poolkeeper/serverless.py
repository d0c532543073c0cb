"""A module-level pool for serverless functions (AWS Lambda and similar).

A function's execution environment is created on a *cold start*, serves many
*warm* invocations one after the other, and is *frozen* between them: its
threads stop, its sockets stay open, and the database, a proxy or a NAT
gateway may drop those idle connections while it sleeps. Hence::

    # handler.py
    from poolkeeper.serverless import ServerlessPool

    db = ServerlessPool("postgresql://app@db-proxy/app")  # at module level


    def handler(event, context):
        with db.connection() as conn:
            return conn.execute("SELECT 1").fetchone()[0]

- The pool is created once per execution environment, on first use (so a
  module import opens nothing), and reused by every warm invocation.
- It is tiny by default (:func:`poolkeeper.presets.serverless`: at most one
  connection, none opened in advance, short timeouts).
- A pause longer than ``validate_after`` seconds between invocations is
  treated as a freeze: before the next checkout, idle connections are pinged
  and the dead ones replaced (:meth:`poolkeeper.Pool.check`), so the handler
  does not get a connection that died while the environment slept.
- ``null=True`` keeps no connection between invocations (a fresh one per
  checkout, closed afterwards), for use behind RDS Proxy or PgBouncer, which
  do the pooling.

The gap is measured with the monotonic clock, which keeps running while a
Lambda environment is frozen (the host does not suspend).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import poolkeeper
from poolkeeper.presets import serverless as serverless_options

__all__ = ["DEFAULT_VALIDATE_AFTER", "ServerlessPool", "ServerlessStats"]

#: Seconds between invocations after which idle connections are validated.
#: Warm invocations in quick succession skip the ping; after a pause this long
#: the connection has probably sat frozen and may be gone.
DEFAULT_VALIDATE_AFTER = 5.0


@dataclass(frozen=True)
class ServerlessStats:
    """What a :class:`ServerlessPool` has seen in this execution environment.

    Attributes:
        invocations: Checkouts through :meth:`ServerlessPool.connection`.
        cold_starts: Pools created (1 in a normal environment; more after
            :meth:`ServerlessPool.close`).
        thaws: Invocations that came after a pause of ``validate_after``
            seconds or more, and so validated the idle connections first.
        last_gap: Seconds between the end of the previous invocation and the
            start of the latest one (None on the first).
    """

    invocations: int
    cold_starts: int
    thaws: int
    last_gap: float | None


class ServerlessPool:
    """A lazily created :class:`poolkeeper.Pool` that survives warm invocations.

    Args:
        connect: URL or connect callable, as for :class:`poolkeeper.Pool`.
        null: Keep no connection between invocations (behind a pooling proxy).
        validate_after: Seconds of pause after which idle connections are
            pinged before use (default 5); None never validates.
        clock: Monotonic clock in seconds (replaceable in tests).
        **pool_kwargs: Pool arguments; they win over
            :func:`poolkeeper.presets.serverless`.
    """

    def __init__(
        self,
        connect: Any,
        *,
        null: bool = False,
        validate_after: float | None = DEFAULT_VALIDATE_AFTER,
        clock: Callable[[], float] = time.monotonic,
        **pool_kwargs: Any,
    ) -> None:
        if validate_after is not None and validate_after < 0:
            raise poolkeeper.ConfigError(
                f"validate_after must be >= 0 seconds or None, got {validate_after!r}"
            )
        self._connect = connect
        self._options = serverless_options(null=null, **pool_kwargs)
        self._null = null
        self._validate_after = validate_after
        self._clock = clock
        self._lock = threading.Lock()
        self._pool: poolkeeper.Pool[Any] | None = None
        self._last_end_at: float | None = None
        self._invocations = 0
        self._cold_starts = 0
        self._thaws = 0
        self._last_gap: float | None = None

    @property
    def pool(self) -> poolkeeper.Pool[Any]:
        """The pool, created on first access (the environment's cold start)."""
        with self._lock:
            if self._pool is None:
                self._pool = poolkeeper.Pool(self._connect, **self._options)
                self._cold_starts += 1
            return self._pool

    @contextmanager
    def connection(self, timeout: float | None = None) -> Iterator[Any]:
        """Borrow a connection for one invocation (commit on success, roll back on error).

        Validates idle connections first when the previous invocation ended
        ``validate_after`` seconds ago or more.

        Args:
            timeout: Seconds to wait for a connection (default: the pool's).

        Raises:
            poolkeeper.PoolTimeout: No connection within the timeout.
        """
        pool = self.pool
        self._begin(pool)
        try:
            with pool.connection(timeout) as conn:
                yield conn
        finally:
            self._last_end_at = self._clock()

    def _begin(self, pool: poolkeeper.Pool[Any]) -> None:
        now = self._clock()
        self._invocations += 1
        previous, self._last_gap = self._last_end_at, None
        if previous is None:
            return
        self._last_gap = gap = now - previous
        if (
            self._validate_after is not None
            and gap >= self._validate_after
            and not self._null  # a null pool keeps nothing that could go stale
        ):
            self._thaws += 1
            pool.check()

    def stats(self) -> ServerlessStats:
        """Return invocation, cold start and thaw counts for this environment."""
        return ServerlessStats(
            invocations=self._invocations,
            cold_starts=self._cold_starts,
            thaws=self._thaws,
            last_gap=self._last_gap,
        )

    def close(self) -> None:
        """Close the pool (for shutdown hooks and tests); the next use creates a new one."""
        with self._lock:
            pool, self._pool = self._pool, None
        self._last_end_at = None
        if pool is not None:
            pool.close()
