"""The poolkeeper exception and warning tree.

Every error a pool raises on its own account derives from :class:`PoolError`.
Errors raised by the driver or by user code while a connection is held pass
through unchanged. Errors carry structured attributes (``pool_name`` and, where
relevant, ``timeout`` and ``waiting``) besides the message, and survive
``pickle`` and ``copy``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ConfigError",
    "ConnectionLeakWarning",
    "PoolClosed",
    "PoolError",
    "PoolTimeout",
    "PoolWarning",
    "QueryTimeout",
    "TooManyWaiters",
]


class PoolError(Exception):
    """Base class of every error raised by poolkeeper itself."""

    __module__ = "poolkeeper"

    def __init__(self, message: str = "", *, pool_name: str | None = None) -> None:
        super().__init__(message)
        self.pool_name = pool_name

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only attributes are restored through the state dict so that
        # pickle and copy give back an equal error.
        return (type(self), self.args, self.__dict__)


class _TimedOut(PoolError, TimeoutError):
    """A pool error that is also a ``TimeoutError``, with the limit that ran out."""

    def __init__(
        self,
        message: str = "",
        *,
        pool_name: str | None = None,
        timeout: float | None = None,
    ) -> None:
        super().__init__(message, pool_name=pool_name)
        self.timeout = timeout


class PoolTimeout(_TimedOut):
    """No connection became available within the timeout."""

    __module__ = "poolkeeper"

    def __init__(
        self,
        message: str = "",
        *,
        pool_name: str | None = None,
        timeout: float | None = None,
        waiting: int | None = None,
    ) -> None:
        super().__init__(message, pool_name=pool_name, timeout=timeout)
        self.waiting = waiting


class QueryTimeout(_TimedOut):
    """The pool aborted a connection whose command ran past ``query_timeout``."""

    __module__ = "poolkeeper"


class PoolClosed(PoolError):
    """The pool is closed (or closing) and hands out no more connections."""

    __module__ = "poolkeeper"


class TooManyWaiters(PoolError):
    """The queue of callers waiting for a connection is full (``max_waiting``)."""

    __module__ = "poolkeeper"

    def __init__(
        self,
        message: str = "",
        *,
        pool_name: str | None = None,
        waiting: int | None = None,
    ) -> None:
        super().__init__(message, pool_name=pool_name)
        self.waiting = waiting


class ConfigError(PoolError, ValueError):
    """An argument, URL or driver choice given to a pool is not valid."""

    __module__ = "poolkeeper"


class PoolWarning(UserWarning):
    """Base class of the warnings poolkeeper emits."""

    __module__ = "poolkeeper"


class ConnectionLeakWarning(PoolWarning):
    """A connection was held past ``leak_timeout``, or closed or dropped without release."""

    __module__ = "poolkeeper"
