"""Credential providers: connect arguments computed for each new connection.

Any ``connect_args`` value may be a callable (for :class:`~poolkeeper.AsyncPool`
also a coroutine function). The pool calls it each time it opens a
connection, so a password that expires or rotates (an RDS IAM token, an
Entra ID token, a Vault dynamic secret) is fetched fresh for every connect,
on every driver. Connections already open are not touched: a rotation only
affects the next connect.

Rules:

- A value is a *provider* when it is callable, is not a class, and its key is
  not one of :data:`CALLABLE_ARGS` (driver arguments that take a factory or a
  hook by nature, such as psycopg's ``row_factory``).
- When a connect fails with an authentication error and a provider is
  involved, the providers are asked once more and, only if they now give
  something different, the connect is tried once more at once. Otherwise the
  error stands and the pool backs off as usual: a provider that keeps giving
  a bad password never makes more than one attempt per connect, so a server
  that locks accounts after failed logins is not hammered.
- A provider's value for a secret-looking key (``password``, ``passwd``,
  anything with ``pass``, ``secret`` or ``token``), or a password inside a
  connection string it returns, is masked like any password: the last
  :data:`RECENT_SECRETS` such values are scrubbed from the pool's log lines
  and error messages.
- An exception raised by a provider itself (no cloud credentials, a secret
  store that refuses) is not a connect error a retry could fix within a
  caller's timeout: like a ``configure`` hook's error, it reaches the waiting
  callers at once (see :func:`raised_by_provider`), and the pool backs off
  before asking again.
"""

from __future__ import annotations

import contextlib
import inspect
import re
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

from poolkeeper.errors import ConfigError

T = TypeVar("T")

#: Driver connect arguments whose value is a callable by nature (a factory, a
#: class, a hook, an event loop), never a credential provider.
CALLABLE_ARGS = frozenset(
    {
        "connection_class",
        "connection_factory",
        "context",
        "conv",
        "cursor_factory",
        "cursorclass",
        "loop",
        "record_class",
        "row_factory",
    }
)

#: How many values from providers a pool remembers in order to mask them.
RECENT_SECRETS = 32

#: The attribute that marks an exception raised by a provider.
_FROM_PROVIDER = "_poolkeeper_from_provider"

#: SQLSTATEs and MySQL error codes of an authentication failure.
_AUTH_SQLSTATES = frozenset({"28000", "28P01"})
_AUTH_MYSQL_CODES = frozenset({1045, 1698})
# libpq reports connect errors without a SQLSTATE (psycopg, psycopg2, aiopg).
_AUTH_MESSAGES = re.compile(
    r"password authentication failed|Access denied for user|PAM authentication failed"
)


class Secrets:
    """The strings a pool never shows: fixed ones plus recent provider values.

    Iterating gives them longest first (so that a secret containing another
    is masked whole). Safe to read from any thread while another adds.
    """

    def __init__(self, fixed: Iterable[str] = (), keep: int = RECENT_SECRETS) -> None:
        self._fixed = tuple(fixed)
        self._keep = keep
        self._recent: tuple[str, ...] = ()
        self._all = self._sorted()
        self._lock = threading.Lock()

    def _sorted(self) -> tuple[str, ...]:
        return tuple(sorted({*self._fixed, *self._recent}, key=len, reverse=True))

    def add(self, values: Iterable[str]) -> None:
        """Remember ``values`` (empty strings are ignored)."""
        new = tuple(v for v in values if v and v not in self._all)
        if not new:
            return
        with self._lock:
            self._recent = (*new, *self._recent)[: self._keep]
            self._all = self._sorted()

    def __iter__(self) -> Iterator[str]:
        return iter(self._all)

    def __len__(self) -> int:
        return len(self._all)

    def __repr__(self) -> str:
        return f"<Secrets: {len(self._all)} masked>"


class Provider:
    """A connect argument computed by calling the user's function."""

    __slots__ = ("function", "key", "secrets")

    def __init__(self, key: str, function: Callable[[], Any], secrets: Secrets) -> None:
        self.key = key
        self.function = function
        self.secrets = secrets

    def __repr__(self) -> str:
        # Never the function's repr: a lambda's closure is not shown, but a
        # functools.partial's repr shows its arguments.
        return f"<credential provider for {self.key!r}>"

    def _record(self, value: Any) -> Any:
        from poolkeeper._config import secrets_in_arg

        self.secrets.add(secrets_in_arg(self.key, value))
        return value

    def get(self) -> Any:
        """Call the provider (sync pools: a plain function)."""
        try:
            value = self.function()
            if inspect.isawaitable(value):
                if inspect.iscoroutine(value):
                    value.close()
                raise ConfigError(
                    f"connect_args[{self.key!r}] returned an awaitable; a Pool needs "
                    "a plain function (coroutine functions are for AsyncPool)"
                )
        except Exception as exc:
            _mark_from_provider(exc)
            raise
        return self._record(value)

    async def aget(self) -> Any:
        """Call the provider and await its result if it is awaitable."""
        try:
            value = self.function()
            if inspect.isawaitable(value):
                value = await value
        except Exception as exc:
            _mark_from_provider(exc)
            raise
        return self._record(value)


def _mark_from_provider(exc: Exception) -> None:
    # A type that refuses attributes (rare: a C type with no __dict__) stays
    # unmarked and is sorted as any connect error.
    with contextlib.suppress(AttributeError, TypeError):
        setattr(exc, _FROM_PROVIDER, True)


def raised_by_provider(exc: BaseException) -> bool:
    """Tell whether ``exc`` was raised by a credential provider, not the driver."""
    return getattr(exc, _FROM_PROVIDER, False) is True


def is_provider_value(key: str, value: object) -> bool:
    """Tell whether a ``connect_args`` value is a credential provider."""
    return callable(value) and not isinstance(value, type) and key not in CALLABLE_ARGS


def wrap_providers(
    connect_args: Mapping[str, Any], secrets: Secrets, *, is_async: bool
) -> dict[str, Any]:
    """Return ``connect_args`` with every provider wrapped in a :class:`Provider`.

    Raises:
        ConfigError: a coroutine function was given to a sync pool.
    """
    wrapped: dict[str, Any] = {}
    for key, value in connect_args.items():
        if isinstance(value, Provider) or not is_provider_value(key, value):
            wrapped[key] = value
            continue
        if not is_async and inspect.iscoroutinefunction(value):
            raise ConfigError(
                f"connect_args[{key!r}] is a coroutine function; a Pool needs a "
                "plain function (coroutine functions are for AsyncPool)"
            )
        wrapped[key] = Provider(str(key), value, secrets)
    return wrapped


def is_auth_failure(error: BaseException) -> bool:
    """Tell whether a connect error says the credentials were refused."""
    sqlstate = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
    if sqlstate in _AUTH_SQLSTATES:
        return True
    args = getattr(error, "args", ())
    if args and isinstance(args[0], int) and args[0] in _AUTH_MYSQL_CODES:
        return True
    return bool(_AUTH_MESSAGES.search(str(error)))


class ConnectArgs:
    """A driver's connect arguments, with providers called at each connect.

    Adapters open connections through :meth:`open` (sync) or :meth:`aopen`
    (asyncio), which implement the ask-once-more rule of the module doc.
    """

    def __init__(self, kwargs: Mapping[str, Any]) -> None:
        self.kwargs = dict(kwargs)
        self.providers = [k for k, v in self.kwargs.items() if isinstance(v, Provider)]

    def resolve(self) -> dict[str, Any]:
        """Return the arguments with every provider called (sync)."""
        kwargs = dict(self.kwargs)
        for key in self.providers:
            kwargs[key] = kwargs[key].get()
        return kwargs

    async def aresolve(self) -> dict[str, Any]:
        """Return the arguments with every provider called and awaited."""
        kwargs = dict(self.kwargs)
        for key in self.providers:
            kwargs[key] = await kwargs[key].aget()
        return kwargs

    def _worth_retrying(self, exc: Exception) -> bool:
        return bool(self.providers) and is_auth_failure(exc)

    def _changed(self, first: Mapping[str, Any], second: Mapping[str, Any]) -> bool:
        return any(first[k] != second[k] for k in self.providers)

    def open(self, connect: Callable[..., T]) -> T:
        """Call ``connect(**arguments)``, asking the providers once more on an auth failure."""
        first = self.resolve()
        try:
            return connect(**first)
        except Exception as exc:
            if not self._worth_retrying(exc):
                raise
            second = self.resolve()
            if not self._changed(first, second):
                raise
        return connect(**second)

    async def aopen(self, connect: Callable[..., Awaitable[T]]) -> T:
        """Like :meth:`open` for an asyncio driver's ``connect`` coroutine function."""
        first = await self.aresolve()
        try:
            return await connect(**first)
        except Exception as exc:
            if not self._worth_retrying(exc):
                raise
            second = await self.aresolve()
            if not self._changed(first, second):
                raise
        return await connect(**second)

    def value(self, key: str, default: Any = None) -> Any:
        """Return one argument, calling its provider if it has one (sync)."""
        value = self.kwargs.get(key, default)
        return value.get() if isinstance(value, Provider) else value


def with_providers(connect: Callable[..., T]) -> Callable[..., T]:
    """Wrap a driver's ``connect(**kwargs)`` so providers among them are called.

    Each call resolves the :class:`Provider` values it is given (see
    :meth:`ConnectArgs.open`), so per-host argument overrides made by a host
    loop still reach the driver.
    """

    def connect_with_providers(**kwargs: Any) -> T:
        return ConnectArgs(kwargs).open(connect)

    return connect_with_providers


def awith_providers(
    connect: Callable[..., Awaitable[T]],
) -> Callable[..., Awaitable[T]]:
    """Like :func:`with_providers` for an asyncio driver's ``connect``."""

    async def connect_with_providers(**kwargs: Any) -> T:
        return await ConnectArgs(kwargs).aopen(connect)

    return connect_with_providers
