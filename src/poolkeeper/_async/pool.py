"""The pool: AsyncPool here, Pool in the generated twin.

This file is the hand-written source of truth: ``tools/gen_sync.py`` generates
``_sync/pool.py`` (the thread-based :class:`Pool`) from it, and the same for
each module of ``_async/``. The shell only takes the lock, asks
:class:`~poolkeeper._core.state.PoolState` what to do, and does the I/O
(connect, commit/rollback, check, close) with the lock released.

Owns: construction (options, driver, hooks, the attributes declared in
``base``), ``repr`` and the asyncio ``acquire()`` wrapper. Everything else is
a mixin below it, one concern per module, each inheriting from the one
under it (see docs/ARCHITECTURE.md)::

    pool -> checkout -> checkin -> validation -> lifecycle
         -> housekeeping -> connecting -> base

May not touch: the behaviour of any of those concerns; add it in its module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, overload

from poolkeeper._async.checkout import AsyncCheckout
from poolkeeper._concurrency import IS_ASYNC, AConnectFn, ADeadlines, AEvent, Lock
from poolkeeper._config import (
    check_callable,
    check_connect_args,
    next_pool_name,
    redact,
    secrets_of,
)
from poolkeeper._connect import driver_for
from poolkeeper._core.events import EventBus
from poolkeeper._credentials import Secrets
from poolkeeper._held import HeldConnections
from poolkeeper._options import split_options
from poolkeeper.drivers.base import (
    QueryWatch,
    connect_classifier,
    idle_probe,
    query_watch,
    role_support,
    state_hooks,
)
from poolkeeper.drivers.session import supports_reset_session
from poolkeeper.errors import ConfigError

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from poolkeeper._options import PoolOptions

if IS_ASYNC:
    from poolkeeper._acquire import AcquireContext

ConnT = TypeVar("ConnT")


class AsyncPool(AsyncCheckout[ConnT]):
    """A pool of database connections.

    :class:`AsyncPool` serves the tasks of one asyncio event loop;
    :class:`Pool`, generated from the same source, serves threads.

    Args:
        connect: A database URL (``postgresql://user@host/db``) or a
            zero-argument callable returning a new driver connection (for
            AsyncPool, a coroutine function).
        **options: The pool's options, all keyword-only and optional: see
            :class:`~poolkeeper.PoolOptions` (and README's table) for each
            one's meaning and default. A misspelt option is a
            :class:`TypeError` naming the right one (and a mypy error).

    Raises:
        ConfigError: An argument is out of range, the URL is not supported, or
            its driver is not installed or does not fit this kind of pool.
    """

    @overload
    def __init__(
        self: AsyncPool[Any], connect: str, **options: Unpack[PoolOptions]
    ) -> None: ...

    @overload
    def __init__(
        self, connect: AConnectFn[ConnT], **options: Unpack[PoolOptions]
    ) -> None: ...

    def __init__(
        self, connect: str | AConnectFn[ConnT], **options: Unpack[PoolOptions]
    ) -> None:
        config, rest = split_options(type(self).__name__, options)
        configure, reset, check = rest["configure"], rest["reset"], rest["check"]
        check_callable("configure", configure)
        check_callable("reset", None if reset == "full" else reset)
        check_callable("check", check)
        name = rest["name"]
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a string, got {type(name).__name__}")
        self.name = name or next_pool_name()
        # Strings never to show in a log line or in the pool's own errors;
        # credential providers in connect_args add their values as they go.
        args = check_connect_args(rest["connect_args"])
        self._secrets = Secrets(
            secrets_of(connect if isinstance(connect, str) else None, args)
        )
        self._driver = driver_for(
            connect, args, is_async=IS_ASYNC, secrets=self._secrets
        )
        self._target = (
            redact(connect) if isinstance(connect, str) else _callable_name(connect)
        )
        self._config = config
        self._timeout = float(config.timeout)
        self._configure = configure
        self._reset = self._full_reset() if reset == "full" else reset
        self._reset_full = reset == "full"
        # A callable's adapter is known at its first connection (see
        # _check_adapter).
        self._adapter_checked = False
        self._check = check
        # Checkout features that take the slow path (see _acquire).
        self._watch_checkout = check is not None or config.leak_timeout is not None
        self._init_driver_hooks()
        self._lock = Lock()
        # Held while the query watchdog reads a connection's driver state and
        # taken before a retired connection is closed: a probe never reads a
        # connection being closed (psycopg2 frees libpq's memory on close).
        self._probe_lock = Lock()
        self._state = self._new_state()
        self._events = EventBus()
        self._opened = False
        self._closing = AEvent()
        self._retry_wake = None
        self._tasks = set()
        self._housekeeper = None
        self._loop = None
        self._held = HeldConnections(self)
        self._watching = self._watch_again = False
        # Call sites whose rolled-back release was logged (see _warn_rollback).
        self._rollback_sites = set()
        if IS_ASYNC:
            # One loop timer for the deadlines of every waiting caller.
            self._deadlines = ADeadlines()

    def _init_driver_hooks(self) -> None:
        """Take from the driver what the hot path and the watchdog call."""
        # A returned connection is idle (nothing to end) when
        # _idle_probe(conn) == _idle_value: no I/O, and False also when a
        # borrower left client-side state to clear (drivers.base).
        self._idle_probe, self._idle_value = idle_probe(self._driver)
        # What a borrower may leave on the connection object (callbacks,
        # listeners): remembered after configure, restored on a slow return.
        self._baseline, self._clear_state = state_hooks(self._driver)
        self._classify = connect_classifier(self._driver)
        self._roles = role_support(self._driver)
        self._query_watch = self._new_query_watch()
        # Shuts a connection's socket down (None: the driver cannot): bounds
        # a checkout's validation ping by the caller's deadline.
        watch = self._query_watch or query_watch(self._driver)
        self._abort = watch[2] if watch else None

    def _new_query_watch(self) -> QueryWatch | None:
        if self._config.query_timeout is None:
            return None
        watch = query_watch(self._driver)
        if watch is None:
            raise ConfigError(
                f"query_timeout is not supported by the {self._driver.name} driver: "
                "it cannot abort a command in progress; leave query_timeout=None"
            )
        return watch

    def _full_reset(self) -> Callable[[Any], Any]:
        if not supports_reset_session(self._driver):
            raise ConfigError(
                f"reset='full' is not supported by the {self._driver.name} driver; "
                "pass a reset callable instead"
            )
        reset_session: Callable[[Any], Any] = self._driver.reset_session  # type: ignore[attr-defined]
        return reset_session

    def __repr__(self) -> str:
        state = self._state
        status = "closed" if state.closed else ("open" if self._opened else "new")
        return (
            f"<{type(self).__name__} {self.name!r} {self._target} {status} "
            f"size={state.size}/{state.max_size} idle={len(state.idle)} "
            f"waiting={state.waiting()}>"
        )

    # -- asyncpg-style explicit form (async-only helper) -------------------------

    if IS_ASYNC:

        def acquire(self, timeout: float | None = None) -> AcquireContext[ConnT]:
            """Borrow a connection until :meth:`release`.

            The result can be awaited (``conn = await pool.acquire()``) or used
            as an async context manager that releases on exit
            (``async with pool.acquire() as conn``), as with asyncpg. It is
            also a coroutine: ``asyncio.create_task``, ``wait_for``,
            ``gather``, ``shield`` and anyio task groups take it. A
            connection closed or dropped without :meth:`release` is noticed
            and its slot taken back, with a
            :class:`~poolkeeper.ConnectionLeakWarning` attributed to the line
            that acquired it.

            Raises:
                PoolTimeout: No connection within the timeout.
                TooManyWaiters: ``max_waiting`` callers are already waiting.
                PoolClosed: The pool is closed.
            """
            return AcquireContext(self, timeout)

    else:
        # The thread pool's acquire() is the checkout itself: no wrapper call
        # on the hot path. (Set here, not in checkout.py: a compiled build's
        # native class cannot alias a method.)
        acquire = AsyncCheckout._acquire


def _callable_name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__name__
