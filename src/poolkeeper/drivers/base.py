"""The small interface every driver adapter implements.

A driver adapter knows how to open a connection of one database library and how
to ask that connection a handful of questions: is it in a transaction, is it
broken, and how to commit, roll back, ping and close it. Sync adapters
implement :class:`Driver`, asyncio adapters :class:`AsyncDriver`. The pool never
touches a driver connection in any other way.

Adding a driver is one new module in this package with a class implementing one
of these protocols, plus one line in the scheme registry
(:mod:`poolkeeper.drivers`).

Optionally, an adapter may also define ``is_idle(conn) -> bool``: True only
when ``conn`` is open, not broken and outside any transaction, so that giving
it back to the pool needs no I/O at all. It must answer without I/O and in
one step, because the pool calls it on every return; False means "ask
:meth:`Driver.is_broken` and :meth:`Driver.transaction_status`". An adapter
without it gets a fallback built from those two methods.

Better still, an adapter may define ``idle_probe`` and ``idle_value``:
``idle_probe(conn) == idle_value`` must mean exactly what ``is_idle(conn)``
means. ``idle_probe`` should be a callable implemented in C (a method
descriptor, an :func:`operator.attrgetter`), so the check costs no Python
frame on the return path. See :func:`idle_probe`.

For the pool's ``query_timeout`` an adapter offers up to three more methods,
all answering without I/O and safe to call from another thread (or task) than
the one using the connection, while a command may be blocked on it:

- ``abort(conn) -> None`` (required for ``query_timeout``): make a call
  blocked on ``conn`` fail promptly with the driver's connection error,
  without waiting for the server: shut the socket down (sync drivers) or
  abort the transport (asyncio drivers). The connection is not reused.
- ``busy(conn) -> bool | None``: True while a command is in progress (sent
  and its results not all read), False when none is, None when the adapter
  cannot tell. Without it (or with None) the pool falls back to the time
  since checkout.
- ``quiet(conn) -> float | None``: seconds since data last moved on the
  connection's socket, in either direction; None when unknown (see
  :mod:`poolkeeper.drivers._abort`).

See :func:`query_watch`.

So that a connection handed out is indistinguishable, through the driver's own
API, from a fresh one, an adapter whose connections keep client-side state a
borrower can leave behind (callbacks, listeners, the driver's own record of an
open transaction) offers two more methods; see :func:`state_hooks`:

- ``baseline(conn) -> None``: called once on each new connection, after the
  pool's ``configure`` hook and before the connection is first handed out;
  remembers what is there now (what ``configure`` installed stays for the
  connection's life). No I/O. The idle check may rely on what it installed.
- ``clear_state(conn) -> None`` (a coroutine on an asyncio adapter): called on
  each return that takes the slow path, after the transaction was ended;
  puts the connection's client-side state back to its baseline. It should do
  no I/O; a round trip is acceptable only to undo what the borrower did on
  the server through that state (asyncpg's ``LISTEN``). If it raises, the
  connection is closed.

The idle probe (``is_idle``/``idle_probe``) must report False whenever there
is something to clear, so that a connection with nothing to clear costs the
return path nothing more.

Finally, ``classify_connect_error(exc) -> ConnectFault`` sorts an error raised
by ``connect`` into a :class:`~poolkeeper._core.connect_errors.ConnectFault`
(bad password, unknown database, refused, TLS, ...), which decides whether
waiting callers get that error at once or keep waiting. The functions live in
:mod:`poolkeeper.drivers._connect_errors`, one per driver family; an adapter
without one gets :func:`~poolkeeper.drivers._connect_errors.classify_any`.
See :func:`connect_classifier`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from poolkeeper._core.connect_errors import ConnectFault

ConnT = TypeVar("ConnT")


class TxStatus(enum.IntEnum):
    """Transaction state of a connection as seen by the pool."""

    IDLE = 0
    """No transaction open: nothing to commit or roll back."""
    INTRANS = 1
    """A transaction is open and healthy."""
    INERROR = 2
    """A transaction is open and failed: only a rollback can end it."""
    UNKNOWN = 3
    """The driver cannot tell: the pool commits or rolls back to be safe."""


class Driver(Protocol):
    """A sync driver adapter.

    Attributes:
        name: The driver's name as used in URLs (``"psycopg"``, ``"sqlite3"``).
        is_async: Always ``False`` for a sync driver.
    """

    name: str
    is_async: bool

    def connect(self) -> Any:
        """Open and return a new driver connection."""
        ...

    def transaction_status(self, conn: Any) -> TxStatus:
        """Tell whether ``conn`` has a transaction open, cheaply and without I/O."""
        ...

    def is_broken(self, conn: Any) -> bool:
        """Tell, without I/O, whether ``conn`` is known to be closed or unusable."""
        ...

    def commit(self, conn: Any) -> None:
        """Commit the open transaction."""
        ...

    def rollback(self, conn: Any) -> None:
        """Roll back the open transaction."""
        ...

    def ping(self, conn: Any) -> None:
        """Check ``conn`` is alive with one cheap round trip; raise if it is not."""
        ...

    def close(self, conn: Any) -> None:
        """Close ``conn``; never raise and never block for long."""
        ...


class AsyncDriver(Protocol):
    """An asyncio driver adapter: :class:`Driver` with coroutine I/O methods."""

    name: str
    is_async: bool

    async def connect(self) -> Any:
        """Open and return a new driver connection."""
        ...

    def transaction_status(self, conn: Any) -> TxStatus:
        """Tell whether ``conn`` has a transaction open, cheaply and without I/O."""
        ...

    def is_broken(self, conn: Any) -> bool:
        """Tell, without I/O, whether ``conn`` is known to be closed or unusable."""
        ...

    async def commit(self, conn: Any) -> None:
        """Commit the open transaction."""
        ...

    async def rollback(self, conn: Any) -> None:
        """Roll back the open transaction."""
        ...

    async def ping(self, conn: Any) -> None:
        """Check ``conn`` is alive with one cheap round trip; raise if it is not."""
        ...

    async def close(self, conn: Any) -> None:
        """Close ``conn``; never raise and never block for long."""
        ...


def idle_check(driver: Driver | AsyncDriver) -> Callable[[Any], bool]:
    """Return the driver's ``is_idle`` function, or one built from its protocol methods."""
    fast: Callable[[Any], bool] | None = getattr(driver, "is_idle", None)
    if fast is not None:
        return fast
    is_broken = driver.is_broken
    status = driver.transaction_status
    # A local: reading a member off an Enum class goes through the enum
    # metaclass's __getattr__ hook (hundreds of instructions on 3.11).
    idle = TxStatus.IDLE

    def is_idle(conn: Any) -> bool:
        return not is_broken(conn) and status(conn) is idle

    return is_idle


def idle_probe(driver: Driver | AsyncDriver) -> tuple[Callable[[Any], object], object]:
    """Return ``(probe, value)``: a connection is idle when ``probe(conn) == value``.

    The driver's own ``idle_probe``/``idle_value`` if it has them, else its
    ``is_idle`` (or the fallback of :func:`idle_check`) and True.
    """
    probe: Callable[[Any], object] | None = getattr(driver, "idle_probe", None)
    if probe is not None:
        return probe, driver.idle_value  # type: ignore[union-attr]
    return idle_check(driver), True


#: What :func:`query_watch` returns: ``(busy, quiet, abort)`` (see the module doc).
QueryWatch = tuple[
    Callable[[Any], "bool | None"],
    Callable[[Any], "float | None"],
    Callable[[Any], None],
]


def _unknown(conn: Any) -> None:
    return None


def query_watch(driver: Driver | AsyncDriver) -> QueryWatch | None:
    """Return the driver's ``(busy, quiet, abort)`` functions, or None without ``abort``.

    A missing ``busy`` or ``quiet`` answers None ("cannot tell").
    """
    abort: Callable[[Any], None] | None = getattr(driver, "abort", None)
    if abort is None:
        return None
    busy: Callable[[Any], bool | None] = getattr(driver, "busy", _unknown)
    quiet: Callable[[Any], float | None] = getattr(driver, "quiet", _unknown)
    return busy, quiet, abort


def connect_classifier(
    driver: Driver | AsyncDriver,
) -> Callable[[BaseException], ConnectFault]:
    """Return the driver's ``classify_connect_error``, or the catch-all one.

    Either way an exception raised by a credential provider (not by the
    driver) is a configuration fault: it reaches waiting callers at once.
    """
    from poolkeeper._credentials import raised_by_provider
    from poolkeeper.drivers._connect_errors import classify_any

    classify: Callable[[BaseException], ConnectFault] = (
        getattr(driver, "classify_connect_error", None) or classify_any
    )

    def classify_connect_error(exc: BaseException) -> ConnectFault:
        if raised_by_provider(exc):
            return ConnectFault.CONFIG
        return classify(exc)

    return classify_connect_error


def settled_check(driver: Driver | AsyncDriver) -> Callable[[Any], bool] | None:
    """Return the driver's ``settled`` function, or None if it has none.

    ``settled(conn)`` tells, without I/O, that ``conn`` is open and no command
    is in progress on it, even after the call that used it was interrupted (a
    cancelled task): the protocol is between messages, so a rollback makes
    the connection as good as new. Only a driver that cancels an interrupted
    command itself and reads its reply can say so: psycopg 3 before it
    re-raises, asyncpg in the background (its adapter's ``wait_settled``
    coroutine, which the pool awaits first, waits for that); for the others
    an interrupted connection is in an unknown state and is discarded.
    """
    settled: Callable[[Any], bool] | None = getattr(driver, "settled", None)
    return settled


def can_abort(driver: Driver | AsyncDriver) -> bool:
    """Tell whether the driver's ``abort`` works on its connections.

    An adapter for a connect callable knows only after its first connection
    which library it wraps (see :mod:`poolkeeper.drivers.dbapi`); until then
    it answers True.
    """
    return query_watch(driver) is not None and bool(getattr(driver, "can_abort", True))


def cannot_abort(conn: Any) -> None:
    """The watchdog's ``abort`` for connections their adapter cannot abort: nothing."""


def state_hooks(
    driver: Driver | AsyncDriver,
) -> tuple[Callable[[Any], None] | None, Callable[[Any], Any] | None]:
    """Return the driver's ``(baseline, clear_state)`` methods; None for a missing one."""
    return getattr(driver, "baseline", None), getattr(driver, "clear_state", None)


def role_support(
    driver: Driver | AsyncDriver,
) -> tuple[str, Callable[[Any], Any]] | None:
    """The role a pool's connections must keep, and how to read one's role.

    A PostgreSQL adapter built from a URL has ``target_session_attrs`` (the
    URL's value, ``"any"`` by default) and ``session_role(conn)`` (one query,
    no transaction left open; a coroutine function on an asyncio adapter),
    so the pool can record each connection's host and role and retire those
    whose role changed after a failover (see ``poolkeeper._hoststate``).
    None: the adapter offers neither (or was built from a callable).
    """
    want = getattr(driver, "target_session_attrs", None)
    session_role = getattr(driver, "session_role", None)
    if not isinstance(want, str) or session_role is None:
        return None
    return want, session_role
