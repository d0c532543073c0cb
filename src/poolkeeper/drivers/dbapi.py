"""Adapters for pools built from a callable instead of a URL.

:class:`CallableDriver` (sync) and :class:`AsyncCallableDriver` (asyncio) wrap
the user's connect function. On the first connection they look at its class:
connections of a library poolkeeper has an adapter for (psycopg, asyncpg,
sqlite3, ...) are handled by that adapter; anything else by the conservative
generic DB-API 2.0 rules of :class:`DBAPIDriver`: the transaction state is
unknown, so a normal exit commits and a return rolls back; the ping is
``SELECT 1``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from poolkeeper.drivers import ops_for_connection
from poolkeeper.drivers._generic import AsyncDBAPIDriver, DBAPIDriver, maybe_await
from poolkeeper.drivers.base import TxStatus, idle_check
from poolkeeper.drivers.session import supports_reset_session

__all__ = ["AsyncCallableDriver", "AsyncDBAPIDriver", "CallableDriver", "DBAPIDriver"]


def _delegate_probe(ops: Any, method: str, conn: Any) -> Any:
    probe = getattr(ops, method, None)
    return probe(conn) if probe is not None else None


def _delegate_abort(ops: Any, name: str, conn: Any) -> None:
    abort = getattr(ops, "abort", None)
    if abort is None:
        raise NotImplementedError(
            f"the {name} adapter cannot abort a command in progress (query_timeout)"
        )
    abort(conn)


class _QueryWatchDelegation:
    """``busy``/``quiet``/``abort``/``settled`` and the capabilities of the
    adapter chosen at first connect, passed on."""

    _ops: Any
    name: str

    def busy(self, conn: Any) -> bool | None:
        """Whether a command is in progress, if the connection's adapter can tell."""
        busy: bool | None = _delegate_probe(self._ops, "busy", conn)
        return busy

    def quiet(self, conn: Any) -> float | None:
        """Seconds the socket has been quiet, if the connection's adapter can tell."""
        quiet: float | None = _delegate_probe(self._ops, "quiet", conn)
        return quiet

    def abort(self, conn: Any) -> None:
        """Abort a blocked call, if the connection's adapter knows how."""
        _delegate_abort(self._ops, self.name, conn)

    def settled(self, conn: Any) -> bool:
        """Whether an interrupted connection is between messages (see
        :func:`poolkeeper.drivers.base.settled_check`); False if the
        connection's adapter cannot tell."""
        return bool(_delegate_probe(self._ops, "settled", conn))

    @property
    def can_abort(self) -> bool:
        """Whether the connection's adapter can abort (True until the first connect)."""
        ops = self._ops
        return ops is None or (
            callable(getattr(ops, "abort", None))
            and bool(getattr(ops, "can_abort", True))
        )

    @property
    def can_reset_session(self) -> bool:
        """Whether the connection's adapter has a full session reset (True until
        the first connect)."""
        ops = self._ops
        return ops is None or supports_reset_session(ops)


class _StateDelegation:
    """Idle check and client-state hooks, delegated to the connection's adapter."""

    _ops: Any
    # The adapter's idle check once the first connection picked the adapter.
    _is_idle: Callable[[Any], bool] = staticmethod(lambda conn: False)

    def is_idle(self, conn: Any) -> bool:
        """Tell whether returning ``conn`` needs nothing done (see drivers.base)."""
        return self._is_idle(conn)

    def baseline(self, conn: Any) -> None:
        """Remember the connection's client-side state, if its adapter keeps any."""
        baseline = getattr(self._ops, "baseline", None)
        if baseline is not None:
            baseline(conn)


class CallableDriver(_QueryWatchDelegation, _StateDelegation):
    """Sync adapter for a user's connect callable; picks its ops from the first connection."""

    name = "callable"
    is_async = False

    def __init__(self, connect: Callable[[], Any]) -> None:
        self._connect = connect
        self._ops: Any = None

    def connect(self) -> Any:
        conn = self._connect()
        if self._ops is None:
            cls = ops_for_connection(conn, is_async=False) or DBAPIDriver
            self._ops = cls(self._connect)
            self.name = self._ops.name
            self._is_idle = idle_check(self._ops)
        return conn

    def transaction_status(self, conn: Any) -> TxStatus:
        return self._ops.transaction_status(conn)  # type: ignore[no-any-return]

    def is_broken(self, conn: Any) -> bool:
        return self._ops.is_broken(conn)  # type: ignore[no-any-return]

    def commit(self, conn: Any) -> None:
        self._ops.commit(conn)

    def rollback(self, conn: Any) -> None:
        self._ops.rollback(conn)

    def ping(self, conn: Any) -> None:
        self._ops.ping(conn)

    def reset_session(self, conn: Any) -> None:
        """Fully reset the session, if the connection's adapter knows how."""
        reset = getattr(self._ops, "reset_session", None)
        if reset is None:
            raise NotImplementedError(
                f"the {self.name} adapter has no full session reset"
            )
        reset(conn)

    def clear_state(self, conn: Any) -> None:
        """Clear what a borrower left on the connection, if its adapter knows how."""
        clear = getattr(self._ops, "clear_state", None)
        if clear is not None:
            clear(conn)

    def close(self, conn: Any) -> None:
        self._ops.close(conn)


class AsyncCallableDriver(_QueryWatchDelegation, _StateDelegation):
    """Asyncio adapter for a user's coroutine connect function."""

    name = "callable"
    is_async = True

    def __init__(self, connect: Callable[[], Any]) -> None:
        self._connect = connect
        self._ops: Any = None

    async def connect(self) -> Any:
        conn = await maybe_await(self._connect())
        if self._ops is None:
            cls = ops_for_connection(conn, is_async=True) or AsyncDBAPIDriver
            self._ops = cls(self._connect)
            self.name = self._ops.name
            self._is_idle = idle_check(self._ops)
        return conn

    def transaction_status(self, conn: Any) -> TxStatus:
        return self._ops.transaction_status(conn)  # type: ignore[no-any-return]

    def is_broken(self, conn: Any) -> bool:
        return self._ops.is_broken(conn)  # type: ignore[no-any-return]

    async def commit(self, conn: Any) -> None:
        await self._ops.commit(conn)

    async def rollback(self, conn: Any) -> None:
        await self._ops.rollback(conn)

    async def ping(self, conn: Any) -> None:
        await self._ops.ping(conn)

    async def reset_session(self, conn: Any) -> None:
        """Fully reset the session, if the connection's adapter knows how."""
        reset = getattr(self._ops, "reset_session", None)
        if reset is None:
            raise NotImplementedError(
                f"the {self.name} adapter has no full session reset"
            )
        await reset(conn)

    async def clear_state(self, conn: Any) -> None:
        """Clear what a borrower left on the connection, if its adapter knows how."""
        clear = getattr(self._ops, "clear_state", None)
        if clear is not None:
            await clear(conn)

    async def wait_settled(self, conn: Any) -> None:
        """Let the connection's adapter finish an interrupted command, if it
        does that in the background (asyncpg)."""
        wait = getattr(self._ops, "wait_settled", None)
        if wait is not None:
            await wait(conn)

    async def close(self, conn: Any) -> None:
        await self._ops.close(conn)
