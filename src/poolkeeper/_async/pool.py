"""The pool shell around the sans-I/O core: AsyncPool here, Pool in the twin.

This file is the hand-written source of truth: ``tools/gen_sync.py`` generates
``_sync/pool.py`` (the thread-based :class:`Pool`) from it. The shell only
takes the lock, asks :class:`~poolkeeper._core.state.PoolState` what to do,
and does the I/O (connect, commit/rollback, check, close) with the lock
released. Background connects run as tasks, so a caller's wait is bounded by
its timeout even when a connect hangs.
"""

from __future__ import annotations

import logging
import math
import sys
import time
import warnings
from collections.abc import Callable
from types import TracebackType
from typing import Any, Generic, Literal, NoReturn, TypeVar, overload

from poolkeeper import _fork as fork_safety
from poolkeeper._async.housekeeping import AsyncHousekeeper
from poolkeeper._async.recovery import arecover
from poolkeeper._concurrency import (
    IS_ASYNC,
    AConnectFn,
    AEvent,
    ASignal,
    Lock,
    Overrun,
    acall,
    acall_within,
    ajoin,
    aspawn,
    current_loop,
)
from poolkeeper._config import (
    DEFAULT_MAX_CONNECTING,
    DEFAULT_MAX_IDLE,
    DEFAULT_MAX_LIFETIME,
    DEFAULT_MAX_SIZE,
    DEFAULT_MAX_WAITING,
    DEFAULT_MIN_SIZE,
    DEFAULT_RECONNECT_MAX,
    DEFAULT_RECONNECT_MIN,
    DEFAULT_TIMEOUT,
    DEFAULT_VALIDATE_AFTER,
    PoolConfig,
    check_callable,
    check_connect_args,
    check_timeout_arg,
    next_pool_name,
    redact,
    scrub,
    secrets_of,
)
from poolkeeper._connect import GENERIC_DRIVERS, adapter_shortfalls, driver_for
from poolkeeper._core.connect_errors import ConnectFault
from poolkeeper._core.entry import PoolEntry, Waiter, capture_stack
from poolkeeper._core.events import EventBus, Listener, PoolEvent
from poolkeeper._core.events import emit as emit_event
from poolkeeper._core.state import SUSPECT_GRACE, PoolState
from poolkeeper._core.stats import PoolStats
from poolkeeper._credentials import Secrets
from poolkeeper._held import HeldConnections, is_closed
from poolkeeper._misuse import needs_async_with, reject_unknown_options
from poolkeeper._origin import from_driver
from poolkeeper._sites import (
    PACKAGE_DIR,
    Mark,
    Site,
    caller_site,
    format_site,
    outside_frame,
    site_of,
)
from poolkeeper.drivers.base import (
    AsyncDriver,
    QueryWatch,
    TxStatus,
    can_abort,
    cannot_abort,
    connect_classifier,
    idle_probe,
    query_watch,
    state_hooks,
)
from poolkeeper.drivers.session import supports_reset_session
from poolkeeper.errors import (
    ConfigError,
    ConnectionLeakWarning,
    PoolClosed,
    PoolError,
    PoolTimeout,
    PoolWarning,
    QueryTimeout,
)

if IS_ASYNC:
    from poolkeeper._acquire import AcquireContext

ConnT = TypeVar("ConnT")

logger = logging.getLogger("poolkeeper.pool")
_monotonic = time.monotonic
_getframe = sys._getframe

#: Seconds a checkout's validation ping may take even when the caller's
#: deadline is nearer (raised to the mean connect time, see _ping_floor): a
#: healthy server answers well within it, so a nearly spent timeout does not
#: turn a good connection into a discarded one.
PING_MIN_BUDGET = 0.1
#: ...and the most that floor may grow to (connects slowed by an outage or a
#: slow ``configure`` hook must not stretch every caller's timeout).
PING_MAX_FLOOR = 1.0
#: Call sites a pool remembers having warned about (a bound on its memory).
MAX_WARNED_SITES = 1000


class AsyncPool(Generic[ConnT]):
    """A pool of database connections.

    :class:`AsyncPool` serves the tasks of one asyncio event loop;
    :class:`Pool`, generated from the same source, serves threads.

    Args:
        connect: A database URL (``postgresql://user@host/db``) or a
            zero-argument callable returning a new driver connection (for
            AsyncPool, a coroutine function).
        min_size: Connections kept open even when idle (default 1).
        max_size: Most connections open at once (default 10). Equal to
            ``min_size`` for a static pool.
        timeout: Default seconds a caller waits for a connection (default 30).
        max_waiting: Callers allowed to wait at once; more fail at once with
            :class:`~poolkeeper.TooManyWaiters`. 0 (default) means no limit.
        max_lifetime: Seconds after which a connection is retired (default
            3600, shortened by up to 5% at random per connection); None: never.
        max_idle: Seconds an idle connection above ``min_size`` is kept
            (default 600); None: forever.
        max_uses: Checkouts after which a connection is retired; None: no limit.
        connect_args: Extra keyword arguments for the driver's connect function
            (URL form only). A function value (for :class:`AsyncPool` also a
            coroutine function) is a credential provider, called for each new
            connection; see docs/SECURITY.md.
        configure: Called with each new connection before first use.
        reset: Called with each connection when it returns to the pool (after
            the rollback). ``"full"`` instead clears all session state with
            the driver's own command (``DISCARD ALL`` on PostgreSQL,
            ``COM_RESET_CONNECTION`` on MariaDB; see docs/DRIVERS.md).
        check: Called with a connection before it is handed out; if it raises,
            the connection is discarded and another one is tried.
        name: The pool's name in logs, errors and metrics.
        max_connecting: Connects allowed in flight at once (default 2).
        reconnect_min: First retry delay after a failed connect (default 0.05 s).
        reconnect_max: Longest retry delay (default 5 s).
        validate: When to ping a connection before handing it out: "idle"
            (when unused for ``validate_after`` seconds, when a sibling was
            just found broken, or after a freeze), "always", "never", or
            "auto" (default: "idle" for drivers with a cheap ping, "never" for
            a generic DB-API callable). A failed ping discards the connection
            and the caller gets another one, invisibly.
        validate_after: Idle seconds after which "idle" validation pings
            (default 0.5).
        keepalive: Ping idle connections every this many seconds so that
            firewalls and server idle timeouts do not silently kill them
            (default None: off).
        leak_timeout: Warn (:class:`~poolkeeper.ConnectionLeakWarning`, with
            the acquiring stack) once about a connection held longer than
            this many seconds, and count it in ``stats().leaks`` (default
            None: off).
        query_timeout: Abort a checked-out connection whose command has been
            stuck for this many seconds (default None: off), for a server
            that hangs while its TCP stack still answers, where keepalives
            and ``tcp_user_timeout`` never fire. The housekeeper (every 0.25
            s at most) shuts the connection's socket down, so the blocked
            call fails at once; the connection is discarded on return
            (reason ``"query_timeout"``), never reused, and inside
            ``connection()`` the caller gets :class:`~poolkeeper.QueryTimeout`
            chained to the driver's error. "Stuck" means: a command is in
            progress and no data has moved on the socket for that long
            (psycopg, psycopg2, aiopg: libpq's ``ACTIVE`` status); for
            drivers that cannot tell whether a command is in progress
            (asyncpg, PyMySQL, mysqlclient, aiomysql) it is the time since
            checkout, shortened by socket traffic, so it also bounds how long
            a connection may be held without traffic. See docs/RELIABILITY.md.
        fair: Serve waiting callers strictly in arrival order (default True):
            a returned connection goes straight to the oldest waiter. False
            lets a running caller take a returned connection ahead of the
            waiters (they are only woken to compete): much higher throughput
            when many threads share few connections, but a waiter can time out
            while others are served.

    Raises:
        ConfigError: An argument is out of range, the URL is not supported, or
            its driver is not installed or does not fit this kind of pool.
    """

    @overload
    def __init__(
        self: AsyncPool[Any],
        connect: str,
        *,
        min_size: int = ...,
        max_size: int = ...,
        timeout: float = ...,
        max_waiting: int = ...,
        max_lifetime: float | None = ...,
        max_idle: float | None = ...,
        max_uses: int | None = ...,
        connect_args: dict[str, Any] | None = ...,
        configure: Callable[[Any], Any] | None = ...,
        reset: Callable[[Any], Any] | Literal["full"] | None = ...,
        check: Callable[[Any], Any] | None = ...,
        name: str | None = ...,
        max_connecting: int = ...,
        reconnect_min: float = ...,
        reconnect_max: float = ...,
        validate: str = ...,
        validate_after: float = ...,
        keepalive: float | None = ...,
        leak_timeout: float | None = ...,
        query_timeout: float | None = ...,
        fair: bool = ...,
    ) -> None: ...

    @overload
    def __init__(
        self,
        connect: AConnectFn[ConnT],
        *,
        min_size: int = ...,
        max_size: int = ...,
        timeout: float = ...,
        max_waiting: int = ...,
        max_lifetime: float | None = ...,
        max_idle: float | None = ...,
        max_uses: int | None = ...,
        connect_args: dict[str, Any] | None = ...,
        configure: Callable[[ConnT], Any] | None = ...,
        reset: Callable[[ConnT], Any] | Literal["full"] | None = ...,
        check: Callable[[ConnT], Any] | None = ...,
        name: str | None = ...,
        max_connecting: int = ...,
        reconnect_min: float = ...,
        reconnect_max: float = ...,
        validate: str = ...,
        validate_after: float = ...,
        keepalive: float | None = ...,
        leak_timeout: float | None = ...,
        query_timeout: float | None = ...,
        fair: bool = ...,
    ) -> None: ...

    def __init__(
        self,
        connect: str | AConnectFn[ConnT],
        *,
        min_size: int = DEFAULT_MIN_SIZE,
        max_size: int = DEFAULT_MAX_SIZE,
        timeout: float = DEFAULT_TIMEOUT,
        max_waiting: int = DEFAULT_MAX_WAITING,
        max_lifetime: float | None = DEFAULT_MAX_LIFETIME,
        max_idle: float | None = DEFAULT_MAX_IDLE,
        max_uses: int | None = None,
        connect_args: dict[str, Any] | None = None,
        configure: Callable[[Any], Any] | None = None,
        reset: Callable[[Any], Any] | Literal["full"] | None = None,
        check: Callable[[Any], Any] | None = None,
        name: str | None = None,
        max_connecting: int = DEFAULT_MAX_CONNECTING,
        reconnect_min: float = DEFAULT_RECONNECT_MIN,
        reconnect_max: float = DEFAULT_RECONNECT_MAX,
        validate: str = "auto",
        validate_after: float = DEFAULT_VALIDATE_AFTER,
        keepalive: float | None = None,
        leak_timeout: float | None = None,
        query_timeout: float | None = None,
        fair: bool = True,
        **unknown: Any,
    ) -> None:
        if unknown:
            # Not in the overloads: mypy still rejects a misspelt option.
            reject_unknown_options(type(self).__name__, unknown, _option_names())
        config = PoolConfig(
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            max_waiting=max_waiting,
            max_lifetime=max_lifetime,
            max_idle=max_idle,
            max_uses=max_uses,
            max_connecting=max_connecting,
            reconnect_min=reconnect_min,
            reconnect_max=reconnect_max,
            validate=validate,
            validate_after=validate_after,
            keepalive=keepalive,
            leak_timeout=leak_timeout,
            query_timeout=query_timeout,
            fair=fair,
        )
        for hook_name, hook in (
            ("configure", configure),
            ("reset", None if reset == "full" else reset),
            ("check", check),
        ):
            check_callable(hook_name, hook)
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a string, got {type(name).__name__}")
        self.name: str = name or next_pool_name()
        # Strings never to show in a log line or in the pool's own errors;
        # credential providers in connect_args add their values as they go.
        args = check_connect_args(connect_args)
        self._secrets = Secrets(
            secrets_of(connect if isinstance(connect, str) else None, args)
        )
        self._driver: AsyncDriver = driver_for(
            connect, args, is_async=IS_ASYNC, secrets=self._secrets
        )
        self._target = (
            redact(connect) if isinstance(connect, str) else _callable_name(connect)
        )
        self._config = config
        self._timeout = float(timeout)
        self._configure = configure
        self._reset = self._full_reset() if reset == "full" else reset
        self._reset_full = reset == "full"
        # A callable's adapter is known at its first connection (see
        # _check_adapter).
        self._adapter_checked = False
        self._check = check
        # Checkout features that take the slow path (see _acquire).
        self._watch_checkout = check is not None or leak_timeout is not None
        # A returned connection is idle (nothing to end) when
        # _idle_probe(conn) == _idle_value: no I/O, and False also when a
        # borrower left client-side state to clear (drivers.base).
        self._idle_probe, self._idle_value = idle_probe(self._driver)
        # What a borrower may leave on the connection object (callbacks,
        # listeners): remembered after configure, restored on a slow return.
        self._baseline, self._clear_state = state_hooks(self._driver)
        self._classify = connect_classifier(self._driver)
        self._query_watch = self._new_query_watch()
        # Shuts a connection's socket down (None: the driver cannot): bounds
        # a checkout's validation ping by the caller's deadline.
        watch = self._query_watch or query_watch(self._driver)
        self._abort: Callable[[Any], None] | None = watch[2] if watch else None
        self._lock = Lock()
        # Held while the query watchdog reads a connection's driver state and
        # taken before a retired connection is closed: a probe never reads a
        # connection being closed (psycopg2 frees libpq's memory on close).
        self._probe_lock = Lock()
        self._state = self._new_state()
        self._events = EventBus()
        self._opened = False
        self._closing = AEvent()
        self._tasks: set[Any] = set()
        self._housekeeper: AsyncHousekeeper | None = None
        self._loop: Any = None
        self._held = HeldConnections(self)
        # Call sites whose rolled-back release was logged (see _warn_rollback).
        self._rollback_sites: set[Site] = set()

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

    def _new_state(self) -> PoolState:
        state = PoolState(self._config, self.name, secrets=self._secrets)
        state.validate_window = self._validate_window()
        state.check_on_checkout = self._check is not None
        return state

    def _validate_window(self) -> float | None:
        policy = self._config.validate
        if policy == "auto":
            # A callable's driver is known after its first connection.
            generic = GENERIC_DRIVERS | {"callable"}
            policy = "never" if self._driver.name in generic else "idle"
        # "always": -inf, not 0, so that no clock reading can make a
        # connection look fresher than "used just now" (a connection returned
        # by another thread after the caller read the clock).
        windows = {
            "always": -math.inf,
            "idle": self._config.validate_after,
            "never": None,
        }
        return windows[policy]

    def __repr__(self) -> str:
        state = self._state
        status = "closed" if state.closed else ("open" if self._opened else "new")
        return (
            f"<{type(self).__name__} {self.name!r} {self._target} {status} "
            f"size={state.size}/{state.max_size} idle={len(state.idle)} "
            f"waiting={len(state.waiters)}>"
        )

    # -- lifecycle ---------------------------------------------------------------

    async def open(self, wait: bool = False, timeout: float | None = None) -> None:
        """Start the pool: begin filling it to ``min_size`` in the background.

        Opening an open pool does nothing. The pool also opens itself on first
        use and when its ``with`` block is entered.

        Args:
            wait: Block until ``min_size`` connections are open.
            timeout: Seconds to wait with ``wait=True`` (default: the pool's
                ``timeout``).

        Raises:
            PoolClosed: The pool was closed.
            PoolTimeout: ``wait=True`` and the pool could not be filled in
                time, or a connect failed (chained as ``__cause__``); the pool
                is closed in that case.
        """
        if self._state.closed:
            raise PoolClosed(f"pool {self.name!r} is closed", pool_name=self.name)
        if not self._opened:
            self._start()
        if wait:
            await self._wait_filled(check_timeout_arg(timeout, self._timeout))

    def _start(self) -> None:
        self._opened = True
        if IS_ASYNC:
            # Remembered to give a clear error when used from another loop.
            self._loop = current_loop()
            self._held.loop = self._loop
        self._housekeeper = AsyncHousekeeper(self)
        self._housekeeper.start()
        fork_safety.register(self)
        self._fill()

    async def _wait_filled(self, timeout: float) -> None:
        deadline = _monotonic() + timeout
        errors_before = self._state.connect_errors
        while True:
            state = self._state
            if state.size >= state.min_size:
                return
            if state.connect_errors > errors_before or _monotonic() >= deadline:
                error = state.last_connect_error
                await self.close()
                raise PoolTimeout(
                    f"pool {self.name!r} could not open {state.min_size} connections "
                    f"within {timeout:.1f} s ({state.size} open)"
                    + (
                        f"; last connect error: {self._describe(error)}"
                        if error
                        else ""
                    ),
                    pool_name=self.name,
                    timeout=timeout,
                ) from error
            await self._closing.wait(0.005)

    async def close(self, timeout: float = 5.0) -> None:
        """Close the pool.

        Waiting callers get :class:`~poolkeeper.PoolClosed`, idle connections
        are closed now and connections in use when they come back. Closing a
        closed pool does nothing.

        Args:
            timeout: Seconds to wait for background work (connects in flight,
                housekeeping) to stop.
        """
        with self._lock:
            if self._state.closed:
                return
            waiters = self._state.close()
            retired = self._state.take_retired()
        self._closing.set()
        for waiter in waiters:
            waiter.signal.set()
        await self._close_entries(retired)
        tasks = list(self._tasks)
        if self._housekeeper is not None:
            tasks.append(self._housekeeper.handle)
        await ajoin([t for t in tasks if t is not None], timeout)
        logger.debug("pool %r closed", self.name)

    async def __aenter__(self) -> AsyncPool[ConnT]:
        await self.open()
        return self

    if IS_ASYNC:
        # `with` instead of `async with`: say so, rather than Python's
        # "does not support the context manager protocol".

        def __enter__(self) -> NoReturn:
            needs_async_with(type(self).__name__, "pool")

        def __exit__(self, *exc_info: object) -> None:
            return None

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- checkout ----------------------------------------------------------------

    def connection(self, timeout: float | None = None) -> AsyncConnectionContext[ConnT]:
        """Borrow a connection for the duration of a ``with`` block.

        On normal exit an open transaction is committed, on an exception it is
        rolled back; then the connection goes back to the pool (or is closed if
        it broke).

        Args:
            timeout: Seconds to wait for a connection (default: the pool's).

        Raises:
            PoolTimeout: No connection within the timeout.
            TooManyWaiters: ``max_waiting`` callers are already waiting.
            PoolClosed: The pool is closed.
        """
        # Built without calling __init__: one Python call less per checkout.
        context: AsyncConnectionContext[ConnT] = _new_context(AsyncConnectionContext)
        context._pool = self
        context._timeout = timeout
        return context

    async def _acquire(self, timeout: float | None = None) -> ConnT:
        """Borrow a connection until :meth:`release`.

        ``with pool.acquire() as conn:`` releases it at the end of the block.
        A connection closed or dropped without :meth:`release` is noticed and
        its slot taken back, with a :class:`~poolkeeper.ConnectionLeakWarning`
        attributed to the line that acquired it.

        Raises:
            PoolTimeout: No connection within the timeout.
            TooManyWaiters: ``max_waiting`` callers are already waiting.
            PoolClosed: The pool is closed.
        """
        # The fast path: an idle connection that can go out as is (see
        # PoolState.acquire) and no check hook or leak detection that needs
        # to see it (listeners are told here). The rest: _acquire_slow().
        # Nested, not `and`-ed: the generator drops a bare IS_ASYNC block.
        frame = _getframe(1)
        if IS_ASYNC:  # noqa: SIM102
            if current_loop() is not self._loop:
                self._check_loop()
        now = _monotonic()
        entry = self._state.acquire(now, self._lock)
        if entry is None or self._watch_checkout:
            entry = await self._acquire_slow(entry, now, timeout)
        elif self._events.checkout:
            self._emit_checkout(entry, now)
        # Note the acquiring site (one frame) and hold the connection weakly
        # from here on (see _held.py); inlined: this is the hot path.
        code = frame.f_code
        if code.co_filename.startswith(PACKAGE_DIR):
            frame = outside_frame(frame)
            code = frame.f_code
        entry.site = (code, frame.f_lasti)
        conn: ConnT = entry.conn
        if entry.ref is not None:
            entry.conn = None
        elif self._held.weak:
            self._held.watch(entry)
        return conn

    async def _acquire_slow(
        self, entry: PoolEntry | None, now: float, timeout: float | None
    ) -> PoolEntry:
        """Finish a checkout that left the fast path of :meth:`_acquire`."""
        state = self._state
        # A checkout served at once has its (0 s) wait recorded already.
        record_wait = entry is None
        if entry is None:
            if not self._opened:
                await self.open()
            if self._held.pending or state.size + state.connecting >= state.max_size:
                # Before waiting: the slot of a connection an acquire() caller
                # closed or dropped may be free.
                self._take_unreleased()
            # Takes an idle connection that is there after all (expired ones
            # are retired on the way, due ones validated below), or waits.
            entry = await self._wait(check_timeout_arg(timeout, self._timeout))
        if state.retired:
            # In the background: an interruption here must not strand `entry`.
            self._spawn_close_retired()
        # The current time, not `now`: a connection handed over after a wait
        # was returned after `now` (validate="always" must still ping it).
        if (
            self._check is not None
            or entry.unconfirmed
            or state.needs_validation(entry, _monotonic())
        ):
            entry = await self._validate(entry, timeout, now)
        if self._config.leak_timeout is not None:
            entry.stack = capture_stack()
        if record_wait:
            with self._lock:
                state.obtained(_monotonic() - now)
        if self._events.checkout:
            self._emit_checkout(entry, now)
        return entry

    def _emit_checkout(self, entry: PoolEntry, started: float) -> None:
        """Tell the checkout listeners; take the connection back if one raises
        past the event bus (KeyboardInterrupt, a cancellation: the bus only
        swallows Exception), since the caller then never gets it."""
        try:
            self._emit("checkout", entry.conn, duration=_monotonic() - started)
        except BaseException:
            with self._lock:
                waiter = self._state.unlend(entry, _monotonic())
            if waiter is not None:
                waiter.signal.set()
            if self._state.retired:
                self._spawn_close_retired()
            raise

    async def _wait(self, timeout: float, may_connect: bool = True) -> PoolEntry:
        """Wait for a connection; ``timeout=0`` waits only for a connect
        started for this caller (``may_connect``: the caller's own timeout
        is 0, not one that ran out)."""
        state = self._state
        now = _monotonic()
        deadline = now + timeout
        waiter = Waiter(ASignal(), now)
        with self._lock:
            # A connection may have come back since the caller looked: with
            # no waiter queued it went to the idle stack, so take it rather
            # than wait for the next return.
            entry = state.checkout(now)
            if entry is None:
                state.enqueue(waiter)
                n = state.plan_connects(now)
                if not timeout and may_connect:
                    deadline += state.wait_for_connect(waiter, now)
        if entry is not None:
            return entry
        self._spawn_connects(n)
        while True:
            try:
                woken = await waiter.signal.wait(deadline - _monotonic())
            except BaseException:
                # Cancelled: never keep a connection handed over meanwhile (it
                # was not counted as a checkout: recall() leaves no trace).
                with self._lock:
                    entry = state.abandon(waiter, timed_out=False)
                    handed_on = state.recall(entry, _monotonic()) if entry else None
                    handed_on = handed_on or state.next_to_nudge()
                if handed_on is not None:
                    handed_on.signal.set()
                if state.retired:
                    # The connection handed over meanwhile retired on its way
                    # back (lifetime, pool closed): close it without waiting here.
                    self._spawn_close_retired()
                raise
            with self._lock:
                # Nudged in unfair mode: try to take an idle connection.
                nudged = woken and waiter.entry is None and waiter.error is None
                if nudged and state.checkout_for(waiter, _monotonic()) is None:
                    waiter.signal = ASignal()
                    state.requeue(waiter)
                    if waiter.error is None:
                        continue
                entry = state.abandon(waiter, timed_out=True)
                if entry is not None:
                    state.served(waiter, _monotonic())
                    nudge = None
                else:
                    nudge = state.next_to_nudge()
            if nudge is not None:
                nudge.signal.set()
            break
        if entry is not None:
            return entry
        error = waiter.error
        if error is not None:
            if isinstance(error, PoolTimeout) and self._events.timeout:
                self._emit("timeout", None, duration=_monotonic() - now)
            raise error
        if self._events.timeout:
            self._emit("timeout", None, duration=_monotonic() - now)
        raise state.timeout_error(timeout)

    async def _validate(
        self, entry: PoolEntry, timeout: float | None, started: float
    ) -> PoolEntry:
        """Ping and/or run the ``check`` hook; on failure discard and try another.

        Retries stay within the caller's timeout, counted from ``started``
        (when the checkout began); the caller never sees the failure.
        """
        state = self._state
        limit = check_timeout_arg(timeout, self._timeout)
        deadline = started + limit
        while True:
            # The ping of a caller cancelled meanwhile, handed over to finish
            # in the background (see recovery.py).
            handover: list[Any] = []
            try:
                if state.needs_validation(entry, _monotonic()):
                    if self._driver.is_broken(entry.conn):
                        raise ConnectionError("the driver reports it closed")
                    if self._abort is None:
                        await self._driver.ping(entry.conn)
                    else:
                        # A server that hangs while its TCP stack still ACKs
                        # would hold the ping, and the caller, for as long as
                        # it hangs: past the caller's deadline the socket is
                        # shut down and the connection discarded.
                        budget = max(deadline - _monotonic(), self._ping_floor())
                        await acall_within(
                            self._driver.ping,
                            entry.conn,
                            budget,
                            self._abort,
                            handover.append,
                        )
                if self._check is not None:
                    await acall(self._check, entry.conn)
                with self._lock:
                    state.validated(entry, _monotonic())
                return entry
            except BaseException as exc:
                if not isinstance(exc, Exception):
                    # Interrupted (a cancelled task): no sign of trouble with
                    # the connection; it is recovered in the background.
                    budget = max(deadline - _monotonic(), self._ping_floor())
                    pending = handover[0] if handover else None
                    self._reclaim(entry, pending, budget, withdraw=True)
                    raise
                with self._lock:
                    state.discard_checked_out(entry, "check", _monotonic())
                    n = state.plan_connects(_monotonic())
                self._spawn_connects(n)
                # In the background: closing politely may wait on a hung server.
                self._spawn_close_retired()
                self._spawn_suspect_check()
                logger.info(
                    "pool %r: validation failed, connection discarded: %s",
                    self.name,
                    self._describe(exc),
                )
                remaining = deadline - _monotonic()
                if isinstance(exc, Overrun) and remaining <= 0:
                    # The server does not answer and the caller's time is up:
                    # do not start on the next idle connection.
                    raise self._validation_timeout(limit, started) from exc
            remaining = deadline - _monotonic()
            with self._lock:
                fresh = state.checkout(_monotonic())
            if fresh is None:
                fresh = await self._wait(max(remaining, 0.0), may_connect=False)
            entry = fresh

    def _reclaim(
        self, entry: PoolEntry, pending: Any, budget: float, *, withdraw: bool
    ) -> None:
        """Take back a connection whose holder was interrupted; recover it in
        the background (``pending``: its unfinished validation ping)."""
        with self._lock:
            if withdraw:
                self._state.withdraw(entry)
            self._state.reclaim(entry, _monotonic())
        self._background(arecover, "recover", self, entry, pending, budget)

    def _ping_floor(self) -> float:
        """The least time a validation ping gets, however near the caller's deadline.

        A healthy server answers a ping within about one connect's worth of
        round trips, so the floor is the mean connect time (at least
        :data:`PING_MIN_BUDGET`): a slow but healthy link does not get its
        good connections shut down because a caller's time is almost spent.
        """
        mean = self._state.connect_time.mean
        return min(max(PING_MIN_BUDGET, mean), PING_MAX_FLOOR)

    def _validation_timeout(self, limit: float, started: float) -> PoolTimeout:
        """Count and describe a checkout whose validation ping overran its deadline."""
        waited = _monotonic() - started
        with self._lock:
            waiting = self._state.validation_timed_out()
        if self._events.timeout:
            self._emit("timeout", None, duration=waited)
        return PoolTimeout(
            f"pool {self.name!r} timed out after {waited:.1f} s (timeout {limit:.1f} s): "
            "the server did not answer the validation ping of an idle connection "
            "(discarded)",
            pool_name=self.name,
            timeout=limit,
            waiting=waiting,
        )

    # -- checkin -----------------------------------------------------------------

    async def release(self, conn: ConnT) -> None:
        """Give back a connection taken with :meth:`acquire`.

        An open transaction is rolled back, and logged at WARNING once per
        call site (:meth:`connection` commits instead). A broken connection
        is closed rather than kept.

        Raises:
            PoolError: ``conn`` is not checked out from this pool (for example,
                it was already released).
        """
        # The fast path of _return(), inlined (one Python call less per
        # cycle); AsyncConnectionContext.__aexit__ has the same lines.
        state = self._state
        entry = state.in_use.get(id(conn))
        if entry is not None and entry.conn is None and entry.ref() is conn:
            entry.conn = conn  # held weakly since acquire(): strongly again
        if (
            entry is None
            or entry.conn is not conn
            or self._reset is not None
            or self._idle_probe(conn) != self._idle_value
        ):
            await self._return(conn, None)
            return
        now = _monotonic()
        if self._events.checkin:
            self._emit("checkin", conn, duration=now - entry.checked_out_at)
        waiter = state.release(entry, now, self._lock)
        if waiter is not None or state.retired:
            await self._after_checkin(waiter, False)

    async def _return(
        self, conn: ConnT, commit: bool | None, exc: BaseException | None = None
    ) -> None:
        """Give back ``conn``; ``commit``: end an open transaction with a commit
        (True), a rollback (False: an exception left the block), or a rollback
        (None: :meth:`release`). ``exc``: what left the ``connection()`` block.

        Raises:
            QueryTimeout: the query watchdog aborted the connection and the
                block failed because of it (``exc`` or a failed commit), or
                a transaction to commit was lost.
        """
        state = self._state
        entry = state.in_use.get(id(conn))
        if entry is None and self._held.forget_closed(conn):
            return  # closed by its user, and already taken back
        if entry is None or entry.conn is not conn:
            raise PoolError(
                f"connection {conn!r} is not checked out from pool {self.name!r} "
                "(released twice, or from another pool?)",
                pool_name=self.name,
            )
        discard = False
        error: BaseException | None = None
        lost = False
        if entry.aborted:
            # Its socket is shut down: nothing to end or reset.
            discard = True
            lost = commit is True and exc is None and self._in_transaction(conn)
        elif self._reset is not None or self._idle_probe(conn) != self._idle_value:
            discard, error = await self._clean(conn, commit)
            if error is not None and not isinstance(error, Exception):
                # Interrupted while ending the transaction (a cancelled task).
                if self._events.checkin:
                    held = _monotonic() - entry.checked_out_at
                    self._emit("checkin", conn, duration=held)
                self._reclaim(entry, None, 0.0, withdraw=False)
                raise error
        now = _monotonic()
        if self._events.checkin:
            self._emit("checkin", conn, duration=now - entry.checked_out_at)
        if discard:
            # A driver that closes a connection when a task is cancelled in
            # the middle of a command (aiopg, aiomysql) says nothing about
            # the server: no suspicion on the other connections.
            cancelled = exc is not None and not isinstance(exc, Exception)
            discard = not cancelled  # whether to check the other connections
            reason = "cancelled" if cancelled else "broken"
            with self._lock:
                waiter = state.checkin(entry, now, discard=True, reason=reason)
        else:
            waiter = state.release(entry, now, self._lock)
        if waiter is not None or state.retired:
            await self._after_checkin(waiter, discard)
        if entry.aborted:
            # Aborted before or while the block ended (a commit, say). Only
            # what the abort caused becomes QueryTimeout: the driver's errors
            # (and the OS's); the application's own exceptions pass unchanged.
            cause = error if error is not None else exc
            if lost or (cause is not None and from_driver(cause, conn)):
                raise self._query_timeout_error() from cause
        if error is not None:
            raise error

    def _in_transaction(self, conn: ConnT) -> bool:
        try:
            return self._driver.transaction_status(conn) is not TxStatus.IDLE
        except Exception:
            return True

    def _query_timeout_error(self) -> QueryTimeout:
        limit = self._config.query_timeout
        return QueryTimeout(
            f"pool {self.name!r}: a command was stuck for longer than "
            f"query_timeout={limit} s; the connection was aborted and discarded",
            pool_name=self.name,
            timeout=limit,
        )

    async def _after_checkin(self, waiter: Waiter | None, discard: bool) -> None:
        """Wake the waiter a returned connection went to; close what retired."""
        if waiter is not None:
            waiter.signal.set()
        state = self._state
        if state.retired:
            with self._lock:
                n = state.plan_connects(_monotonic())
            self._spawn_connects(n)
            await self._close_retired()
            if discard:
                self._spawn_suspect_check()

    async def _clean(
        self, conn: ConnT, commit: bool | None
    ) -> tuple[bool, BaseException | None]:
        """End the transaction of a returned connection and run the reset hook.

        Returns whether to discard the connection, and an error the caller
        must see (a failed commit, or an interruption).
        """
        driver = self._driver
        discard = False
        error: BaseException | None = None
        try:
            if driver.is_broken(conn):
                discard = True
            else:
                status = driver.transaction_status(conn)
                if status is not TxStatus.IDLE:
                    if commit and status is not TxStatus.INERROR:
                        try:
                            await driver.commit(conn)
                        except Exception as exc:
                            # The caller must hear about a failed commit.
                            error = exc
                            discard = True
                    else:
                        if commit is None:
                            self._warn_rollback(status)
                        await driver.rollback(conn)
                if self._clear_state is not None and not discard:
                    await self._clear_state(conn)
                if self._reset is not None and not discard:
                    await acall(self._reset, conn)
        except BaseException as exc:
            # A connection whose reset failed or was interrupted is not reusable.
            discard = True
            if not isinstance(exc, Exception):
                error = exc
            else:
                logger.warning(
                    "pool %r: resetting a returned connection failed, closing it: %s",
                    self.name,
                    self._describe(exc),
                )
        return discard, error

    def _warn_if_open(self, conn: ConnT) -> None:
        """Warn as :meth:`_warn_rollback` if ``conn`` has a transaction to roll back."""
        status = self._driver.transaction_status(conn)
        if status is not TxStatus.IDLE:
            self._warn_rollback(status)

    def _take_unreleased(self) -> None:
        """Take back the slots of connections that their ``acquire()`` callers
        dropped (garbage collected) or closed without :meth:`release`."""
        state = self._state
        held = self._held
        driver = self._driver
        found: list[tuple[Mark | None, Any]] = []
        with self._lock:
            now = _monotonic()
            while held.pending:
                entry = held.pending.popleft()
                site = entry.site
                if (
                    entry.conn is None
                    and site is not None
                    and state.take_unreleased(entry, now)
                ):
                    found.append((site, None))
            for entry in list(state.in_use.values()):
                conn = entry.live_conn() if entry.site is not None else None
                if conn is not None and is_closed(driver, conn):
                    found.append((entry.site, conn))
                    held.give_back(entry, conn)
                    state.take_unreleased(entry, now)
                    held.remember_closed(conn)
            n = state.plan_connects(now) if found else 0
        if not found:
            return
        self._spawn_connects(n)
        if state.retired:
            self._spawn_close_retired()
        for site, conn in found:
            self._report_unreleased(site, conn)

    def _report_unreleased(self, mark: Mark | None, conn: Any) -> None:
        site = site_of(mark)
        how = "dropped (garbage collected)" if conn is None else "closed"
        message = (
            f"pool {self.name!r}: a connection acquired at {format_site(site)} was "
            f"{how} without release(); its slot was taken back. Give connections "
            "back with release(), or use a with block: pool.connection() (commits) "
            "or pool.acquire() (rolls back)"
        )
        try:
            filename, lineno = site or ("<unknown>", 0)
            warning = ConnectionLeakWarning(message)
            warnings.warn_explicit(warning, ConnectionLeakWarning, filename, lineno)
        except Warning:
            # Turned into an error by a filter: not the current caller's to catch.
            logger.warning("%s", message)
        if self._events.leak:
            self._emit("leak", conn, reason="closed" if conn is not None else "dropped")

    def _warn_rollback(self, status: TxStatus) -> None:
        """Say (once per call site) that release() rolls back an open transaction."""
        if status is TxStatus.UNKNOWN:
            return  # the driver cannot tell (mysqlclient): nothing to say
        site = caller_site()
        sites = self._rollback_sites
        if site in sites or len(sites) >= MAX_WARNED_SITES:
            return
        sites.add(site)
        logger.warning(
            "pool %r: a connection came back with a transaction %s at %s; it was "
            "rolled back: release() and acquire()'s with block roll back, while "
            "connection()'s with block commits on normal exit. Commit before "
            "releasing, or use connection(). (Logged once per call site.)",
            self.name,
            "in error" if status is TxStatus.INERROR else "open",
            format_site(site),
        )

    # -- background work ---------------------------------------------------------

    def _fill(self) -> None:
        with self._lock:
            n = self._state.plan_connects(_monotonic())
        self._spawn_connects(n)

    def _spawn_connects(self, n: int) -> None:
        for _ in range(n):
            self._background(self._connect_worker, "connect")

    async def _connect_worker(self) -> None:
        """Open one connection (retrying with backoff while it is needed) and place it."""
        state = self._state
        try:
            while True:
                with self._lock:
                    delay = state.connect_delay(_monotonic())
                if delay > 0 and await self._closing.wait(delay):
                    with self._lock:
                        state.connect_cancelled()
                    return
                started = _monotonic()
                try:
                    conn = await self._driver.connect()
                    if not self._adapter_checked:
                        await self._check_adapter(conn)
                except Exception as exc:
                    error, fault = exc, self._classify(exc)
                else:
                    hook_error = await self._configure_new(conn)
                    if hook_error is None:
                        if self._baseline is not None:
                            # What configure installed stays; see drivers.base.
                            self._baseline(conn)
                        if not IS_ASYNC:
                            # `with pool.acquire() as conn:` gives it back on exit.
                            self._held.adopt(conn)
                        break
                    error, fault = hook_error, self._classify(hook_error)
                    if fault is ConnectFault.TRANSIENT and not from_driver(
                        hook_error, conn
                    ):
                        # The application's own code failed: retrying will not fix it.
                        fault = ConnectFault.CONFIG
                if not self._connect_failed(error, fault):
                    return
            waiter, n = self._connected(conn, started)
        except BaseException:
            with self._lock:
                state.connect_cancelled()
            raise
        if waiter is not None:
            waiter.signal.set()
        self._spawn_connects(n)
        if state.retired:
            await self._close_retired()

    def _connected(self, conn: Any, started: float) -> tuple[Waiter | None, int]:
        """Add a connection opened since ``started``: return the waiter it
        went to, if any, and how many connects to start next."""
        state = self._state
        now = _monotonic()
        with self._lock:
            if state.validate_window is None:
                state.validate_window = self._validate_window()
            waiter = state.connected(conn, now, now - started)
            n = state.plan_connects(now)
        logger.debug("pool %r: connection opened in %.3f s", self.name, now - started)
        if self._events.connect:
            self._emit("connect", conn, duration=now - started)
        return waiter, n

    async def _open_for_caller(self) -> bool:
        """Open one connection in the caller, if none is idle and there is room.

        For integrations whose users expect a checkout to connect by itself
        (SQLAlchemy's QueuePool does): a connect error reaches the caller as
        raised, and the new connection joins the pool as one of its own, to
        the oldest waiter, else idle. Returns whether a connection was added.
        """
        state = self._state
        with self._lock:
            if not state.reserve_connect():
                return False
        started = _monotonic()
        try:
            conn = await self._driver.connect()
            if not self._adapter_checked:
                await self._check_adapter(conn)
            hook_error = await self._configure_new(conn)  # closes conn on failure
            if hook_error is not None:
                raise hook_error
        except BaseException:
            with self._lock:
                state.connect_cancelled()
            raise
        if self._baseline is not None:
            self._baseline(conn)
        waiter, n = self._connected(conn, started)
        if waiter is not None:
            waiter.signal.set()
        self._spawn_connects(n)
        if state.retired:
            await self._close_retired()
        return True

    def _take_out(self, conn: ConnT, keep_idle: int | None) -> bool:
        """Take a checked-out connection out of the pool; its user closes it.

        See :meth:`PoolState.shed`: with ``keep_idle``, only when no caller
        waits and that many are idle already; None: always (the user closed
        it already). Returns whether it left; a replacement is opened for
        waiting callers.
        """
        state = self._state
        with self._lock:
            entry = state.in_use.get(id(conn))
            if entry is None or entry.live_conn() is not conn:
                return False
            # Held weakly since acquire() (dropped-connection detection):
            # the pool owns it strongly again from here on.
            entry.conn = conn
            if not state.shed(entry, _monotonic(), keep_idle):
                return False
            n = state.plan_connects(_monotonic())
        if self._events.discard:
            self._emit("discard", conn, reason=entry.close_reason)
        self._spawn_connects(n)
        return True

    def _connect_failed(self, error: BaseException, fault: ConnectFault) -> bool:
        """Record a failed connect (or configure hook), wake the waiters it
        fails, tell listeners and the log; return whether to retry."""
        state = self._state
        with self._lock:
            now = _monotonic()
            retry = state.connect_failed(error, now, fault)
            delay = state.connect_delay(now)
            failures = state.connect_failures
            failed, state.failed_waiters = state.failed_waiters, []
        for failed_waiter in failed:
            failed_waiter.signal.set()
        if self._events.connect_error:
            self._emit("connect_error", None, error=error)
        self._log_connect_failure(error, failures, delay if retry else None)
        return retry

    async def _check_adapter(self, conn: Any) -> None:
        """Check what the adapter of a callable's first connection supports.

        ``reset="full"`` without a full reset for these connections is refused
        (the connection is closed; the ConfigError is a connect error that
        retrying cannot fix, so waiting callers get it at once). That
        ``query_timeout`` cannot cut a stuck call short is said once.
        """
        if self._reset_full and not supports_reset_session(self._driver):
            await self._driver.close(conn)
            raise ConfigError(
                f"reset='full' is not supported by the {self._driver.name} adapter "
                "for connections from a callable; pass a reset callable, or build "
                "the pool from a URL"
            )
        with self._lock:
            if self._adapter_checked:
                return
            self._adapter_checked = True
        for message in adapter_shortfalls(self._driver, self._query_watch is not None):
            try:
                warnings.warn(
                    PoolWarning(f"pool {self.name!r}: {message}"), stacklevel=1
                )
            except Warning:
                # Turned into an error by a filter, in a background connect
                # where no caller could catch it: log it instead.
                logger.warning("pool %r: %s", self.name, message)
        if not can_abort(self._driver):
            # Validation pings are not bounded; the watchdog still marks a
            # stuck checkout (discarded on return, QueryTimeout) but leaves
            # the call alone.
            self._abort = None
            if self._query_watch is not None:
                self._query_watch = (*self._query_watch[:2], cannot_abort)

    async def _configure_new(self, conn: Any) -> Exception | None:
        """Run the ``configure`` hook; on failure close ``conn``, return the error."""
        if self._configure is None:
            return None
        try:
            await acall(self._configure, conn)
        except Exception as exc:
            logger.warning(
                "pool %r: configure hook failed, closing the connection: %s",
                self.name,
                self._describe(exc),
            )
            await self._driver.close(conn)
            return exc
        return None

    def _log_connect_failure(
        self, exc: BaseException, failures: int, retry_in: float | None
    ) -> None:
        if retry_in is None:
            logger.warning(
                "pool %r: connect to %s failed (%d in a row): %s",
                self.name,
                self._target,
                failures,
                self._describe(exc),
            )
        else:
            logger.warning(
                "pool %r: connect to %s failed (%d in a row), retrying in %.2f s: %s",
                self.name,
                self._target,
                failures,
                retry_in,
                self._describe(exc),
            )

    def _describe(self, exc: BaseException) -> str:
        """``repr(exc)`` with any password from the URL or connect_args masked."""
        return scrub(repr(exc), self._secrets)

    def _log_close_error(self, exc: Exception) -> None:
        logger.debug(
            "pool %r: error closing a connection: %s", self.name, self._describe(exc)
        )

    async def _close_retired(self) -> None:
        with self._lock:
            retired = self._state.take_retired()
        await self._close_entries(retired)

    async def _close_entries(self, entries: list[PoolEntry]) -> None:
        for i, entry in enumerate(entries):
            reason = entry.close_reason
            logger.debug("pool %r: closing a connection (%s)", self.name, reason)
            if self._events.discard:
                self._emit("discard", entry.conn, reason=reason)
            with self._probe_lock:
                pass  # a watchdog probe of this connection finishes first
            try:
                await self._driver.close(entry.conn)
            except Exception as exc:
                self._log_close_error(exc)
            except BaseException:
                # Interrupted (a cancelled task): the core already counts these
                # as closed, so they must still close, in the background (this
                # one again: closing twice is harmless, half-closed is not).
                self._background(self._close_quietly, "close", entries[i:])
                raise

    async def _close_quietly(self, entries: list[PoolEntry]) -> None:
        for entry in entries:
            try:
                await self._driver.close(entry.conn)
            except Exception as exc:
                self._log_close_error(exc)

    def _background(self, fn: Callable[..., Any], what: str, *args: Any) -> None:
        """Run ``fn(*args)`` as pool background work (joined by :meth:`close`)."""
        if not IS_ASYNC:
            # Threads have no done-callback: forget the finished ones here.
            self._tasks = {t for t in self._tasks if t.is_alive()}
        task = aspawn(fn, *args, name=f"poolkeeper-{what}-{self.name}")
        self._tasks.add(task)
        if IS_ASYNC:
            task.add_done_callback(self._tasks.discard)

    async def _housekeep(self) -> None:
        """One housekeeping round: retire, ping, report leaks, refill, and
        abort stuck commands (``query_timeout``)."""
        self._take_unreleased()
        now = _monotonic()
        with self._lock:
            due, leaked = self._state.housekeep(now)
            n = self._state.plan_connects(now)
        watch = self._query_watch
        if watch is not None:
            self._watch_queries(watch)
            # Nothing below may hold up the next round: a graceful close or
            # a ping can wait on a hung server.
            if self._state.retired:
                self._spawn_close_retired()
        else:
            await self._close_retired()
        self._spawn_connects(n)
        for entry in leaked:
            self._report_leak(entry, now)
        if due and watch is not None:
            self._background(self._ping_entries, "ping", due)
        elif due:
            await self._ping_entries(due)

    def _watch_queries(self, watch: QueryWatch) -> None:
        """Abort the connections whose command is stuck past ``query_timeout``."""
        busy_of, quiet_of, abort = watch
        limit = self._config.query_timeout or 0.0
        state = self._state
        with self._lock:
            suspects = state.query_suspects(_monotonic())
        if not suspects:
            return
        probes = []
        with self._probe_lock:
            for entry, lent_at in suspects:
                if entry.close_reason is not None:
                    continue  # returned and retired meanwhile: maybe closing
                # Read the driver's state without I/O, with the lock released.
                now = _monotonic()
                try:
                    conn = entry.live_conn()
                    busy = busy_of(conn)
                    quiet = (
                        quiet_of(conn)
                        if busy is not False and now - lent_at >= limit
                        else None
                    )
                except Exception as exc:
                    logger.debug(
                        "pool %r: query watchdog probe failed: %s",
                        self.name,
                        self._describe(exc),
                    )
                    continue
                probes.append((entry, lent_at, busy, quiet, now))
        with self._lock:
            verdicts = [
                (entry, state.judge_query(entry, lent_at, busy, quiet, now))
                for entry, lent_at, busy, quiet, now in probes
            ]
        for entry, stalled in verdicts:
            if stalled is None:
                continue
            logger.warning(
                "pool %r: a command was stuck for %.1f s (query_timeout=%s s), "
                "aborting its connection",
                self.name,
                stalled,
                limit,
            )
            with self._probe_lock:
                if entry.close_reason is not None:
                    continue
                try:
                    abort(entry.live_conn())
                except Exception as exc:
                    logger.warning(
                        "pool %r: could not abort a stuck connection: %s",
                        self.name,
                        self._describe(exc),
                    )

    def _report_leak(self, entry: PoolEntry, now: float) -> None:
        held = now - entry.checked_out_at
        message = (
            f"pool {self.name!r}: connection {entry.live_conn()!r} held for {held:.1f} s "
            f"(leak_timeout={self._config.leak_timeout}); acquired at:\n"
            f"{entry.stack or '(stack not captured)'}"
        )
        try:
            warnings.warn(ConnectionLeakWarning(message), stacklevel=1)
        except Warning:
            # A filter turned the warning into an error, but it is raised in
            # the housekeeper, where no caller can catch it: log it instead.
            logger.warning("%s", message)
        if self._events.leak:
            self._emit("leak", entry.live_conn(), duration=held, stack=entry.stack)

    async def _ping_entries(self, entries: list[PoolEntry]) -> None:
        """Ping connections the core lent out for a check, and give them back."""
        for entry in entries:
            ok = not self._driver.is_broken(entry.conn)
            if ok:
                try:
                    await self._driver.ping(entry.conn)
                except Exception as exc:
                    logger.info(
                        "pool %r: ping failed, closing: %s",
                        self.name,
                        self._describe(exc),
                    )
                    ok = False
            with self._lock:
                waiter = self._state.give_back(entry, _monotonic(), ok=ok)
            if waiter is not None:
                waiter.signal.set()
        await self._close_retired()
        self._fill()

    # -- maintenance -------------------------------------------------------------

    async def resize(
        self, min_size: int | None = None, max_size: int | None = None
    ) -> None:
        """Change ``min_size`` and/or ``max_size`` of a running pool.

        Extra idle connections close at once; extra busy ones when they return.

        Raises:
            ConfigError: The new sizes are invalid.
        """
        with self._lock:
            self._state.resize(min_size, max_size)
            n = self._state.plan_connects(_monotonic()) if self._opened else 0
        self._spawn_connects(n)
        await self._close_retired()

    def _spawn_close_retired(self) -> None:
        self._background(self._close_retired, "close")

    def _spawn_suspect_check(self) -> None:
        """Check, in the background, idle connections that may share a broken one's fate."""
        if self._state.idle and not self._state.closed:
            self._background(self._check_suspects, "check")

    async def _check_suspects(self) -> None:
        # Twice: at once, and again when the grace window has passed, because
        # a connection may answer the first ping while the server is still
        # ending its session (see SUSPECT_GRACE).
        for _ in range(2):
            with self._lock:
                entries = self._state.take_idle(suspects_only=True, now=_monotonic())
            if entries:
                await self._ping_entries(entries)
            if await self._closing.wait(SUSPECT_GRACE):
                return

    async def check(self) -> None:
        """Ping every idle connection now and close the ones that fail."""
        with self._lock:
            entries = self._state.take_idle(now=_monotonic())
        await self._ping_entries(entries)

    def on(self, event: str, listener: Listener) -> None:
        """Call ``listener(event)`` with a :class:`~poolkeeper.PoolEvent` on each ``event``.

        Events: connect, connect_error, checkout, checkin, discard, timeout,
        leak. Listeners run in the thread or task that caused the event and
        must be quick; an exception in a listener is logged and ignored.

        Raises:
            ConfigError: ``event`` is not an event name.
        """
        self._events.listeners(event).append(listener)

    def off(self, event: str, listener: Listener) -> None:
        """Stop calling ``listener`` on ``event`` (no error if it was not subscribed)."""
        listeners = self._events.listeners(event)
        if listener in listeners:
            listeners.remove(listener)

    def _emit(
        self,
        kind: str,
        conn: Any,
        duration: float = 0.0,
        reason: str | None = None,
        error: BaseException | None = None,
        stack: str | None = None,
    ) -> None:
        # Called on the hot path whenever someone listens: no validation of
        # `kind` (the call sites are fixed), positional construction.
        event = PoolEvent(kind, self.name, conn, duration, reason, error, stack)
        emit_event(getattr(self._events, kind), event)

    def _after_fork(self) -> None:
        """Forget everything inherited from the parent (runs in a forked child).

        The child must never talk on, or close, the parent's connections:
        their sockets are pointed at /dev/null and the objects are kept alive,
        so no finalizer sends a goodbye that would end the parent's sessions.
        The pool starts empty and refills on first use.
        """
        state = self._state
        held = (*state.idle, *state.in_use.values(), *state.retired)
        conns = [entry.live_conn() for entry in held]
        fork_safety.quarantine([conn for conn in conns if conn is not None])
        self._lock = Lock()
        self._probe_lock = Lock()
        self._state = self._new_state()
        self._state.closed = state.closed
        self._closing = AEvent()
        self._tasks = set()
        self._housekeeper = None
        self._opened = False
        self._loop = None

    def stats(self) -> PoolStats:
        """Return a snapshot of the pool's gauges, counters and time summaries.

        The pool's lock is held only while the numbers are copied; quantiles
        are computed after it is released, so calling this often (a metrics
        scrape, a health endpoint) does not hold up acquires and releases.
        """
        with self._lock:
            copied = self._state.stats_copy()
        return copied.build()

    def _check_loop(self) -> None:
        loop = current_loop()
        if loop is not self._loop:
            if self._loop is None:
                self._loop = loop
                return
            raise PoolError(
                f"pool {self.name!r} was opened in another event loop; an AsyncPool "
                "can only be used from the loop that opened it",
                pool_name=self.name,
            )

    # -- asyncpg-style explicit form (async-only helper, see below) --------------

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
        # on the hot path.
        acquire = _acquire


class AsyncConnectionContext(Generic[ConnT]):
    """What ``pool.connection()`` returns: borrows on enter, gives back on exit."""

    __slots__ = ("_conn", "_pool", "_timeout")

    _pool: AsyncPool[ConnT]
    _timeout: float | None
    _conn: ConnT

    def __init__(self, pool: AsyncPool[ConnT], timeout: float | None) -> None:
        self._pool = pool
        self._timeout = timeout

    # __aenter__ and __aexit__ inline the fast paths of AsyncPool._acquire()
    # and AsyncPool.release() (keep them in step): a Python call less on each.

    if IS_ASYNC:

        def __enter__(self) -> NoReturn:
            needs_async_with(
                f"{type(self._pool).__name__}.connection()", "pool.connection() as conn"
            )

        def __exit__(self, *exc_info: object) -> None:
            return None

    async def __aenter__(self) -> ConnT:
        pool = self._pool
        # Nested, not `and`-ed: the generator drops a bare IS_ASYNC block.
        if IS_ASYNC:  # noqa: SIM102
            if current_loop() is not pool._loop:
                pool._check_loop()
        now = _monotonic()
        entry = pool._state.acquire(now, pool._lock)
        if entry is None or pool._watch_checkout:
            entry = await pool._acquire_slow(entry, now, self._timeout)
            conn: ConnT = entry.conn
        else:
            conn = entry.conn
            if pool._events.checkout:
                pool._emit_checkout(entry, now)
        self._conn = conn
        return conn

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        pool = self._pool
        conn = self._conn
        state = pool._state
        entry = state.in_use.get(id(conn))
        if (
            entry is None
            or entry.conn is not conn
            or pool._reset is not None
            or pool._idle_probe(conn) != pool._idle_value
            or exc is not None
        ):
            # Commit (normal exit) or roll back (exception) an open transaction.
            await pool._return(conn, exc_type is None, exc)
            return
        now = _monotonic()
        if pool._events.checkin:
            pool._emit("checkin", conn, duration=now - entry.checked_out_at)
        waiter = state.release(entry, now, pool._lock)
        if waiter is not None or state.retired:
            await pool._after_checkin(waiter, False)


_new_context = object.__new__


def _option_names() -> list[str]:
    code = AsyncPool.__init__.__code__
    names = code.co_varnames[2 : code.co_argcount + code.co_kwonlyargcount]
    return list(names)


def _callable_name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__name__
