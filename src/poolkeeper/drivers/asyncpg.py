"""asyncpg adapter (async only): :class:`AsyncpgDriver` for ``postgresql+asyncpg://``.

asyncpg reports whether a transaction is open but not whether it failed; the
pool treats an open one as needing a commit (normal exit) or a rollback.
Closing uses a short graceful close and falls back to ``terminate()``.

URL query parameters: asyncpg's own connect arguments (``timeout``,
``command_timeout``, ``statement_cache_size``, ...; ``connect_timeout`` is an
alias of ``timeout``) are converted to numbers; ``keepalives*`` tune TCP
keepalive; everything else is handed to asyncpg as a DSN query, so libpq-style
parameters (``sslmode``, ``host=/var/run/postgresql``, ``target_session_attrs``)
work as asyncpg documents and unknown ones become server settings
(``?application_name=x&search_path=y``).

``query_timeout`` support: asyncpg does not say whether a command is in
progress, so the pool goes by the time since checkout and the socket's quiet
time; ``abort`` is ``conn.terminate()`` (the transport is aborted and the
pending call raises ``ConnectionDoesNotExistError``).

Defaults: a 10 s connect ``timeout`` (asyncpg's own default is 60 s), and TCP
keepalive probes with the libpq defaults (30 s idle, 10 s interval, 3 probes).
asyncpg has no keepalive option, so poolkeeper sets the socket options right
after connecting; ``?keepalives=0`` turns that off.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

import asyncpg

from poolkeeper._config import URL
from poolkeeper._credentials import awith_providers
from poolkeeper.drivers._abort import quiet_seconds
from poolkeeper.drivers._connect_errors import classify_asyncpg
from poolkeeper.drivers._hosts import (
    ROLE_QUERY,
    HostTarget,
    Role,
    async_role_of,
    connect_hosts_async,
    host_target,
    role_from,
)
from poolkeeper.drivers._kept import keep, restore
from poolkeeper.drivers._options import (
    DEFAULT_CONNECT_TIMEOUT,
    KEEPALIVE_PARAMS,
    Keepalive,
    convert_query,
    present,
    to_bool,
)
from poolkeeper.drivers.base import TxStatus

# Module constants: an Enum member read off its class costs a metaclass hook.
_IDLE, _INTRANS = TxStatus.IDLE, TxStatus.INTRANS

#: Seconds a graceful close may take before the socket is simply dropped.
CLOSE_TIMEOUT = 2.0

#: asyncpg connect arguments accepted as URL parameters, with their types.
_CONNECT_PARAMS: dict[str, Callable[[str], Any]] = {
    "timeout": float,
    "connect_timeout": float,
    "command_timeout": float,
    "statement_cache_size": int,
    "max_cached_statement_lifetime": float,
    "max_cacheable_statement_size": int,
    "direct_tls": to_bool,
}

#: Query loggers exist since asyncpg 0.29.
_QUERY_LOGGERS = hasattr(asyncpg.Connection, "_query_loggers")

#: Callback registries restored to what ``configure`` left (see ``_kept``).
_KEPT = ("_termination_listeners",) + (("_query_loggers",) if _QUERY_LOGGERS else ())

#: What ``DISCARD ALL`` does, minus ``DEALLOCATE ALL``: asyncpg caches
#: prepared statements by name and would fail on the next cached query.
#: ``Connection.reset()`` already covers advisory locks, ``CLOSE ALL``,
#: ``UNLISTEN *`` and ``RESET ALL``.
_RESET_SQL = (
    "SET SESSION AUTHORIZATION DEFAULT; DISCARD PLANS; DISCARD TEMP; DISCARD SEQUENCES"
)


#: The full reset script per reset query (a connection subclass may change
#: ``get_reset_query``; in practice there is one entry per server version).
_RESET_SCRIPTS: dict[str, str] = {}


def _reset_script(conn: Any) -> str:
    """``Connection.get_reset_query()`` followed by :data:`_RESET_SQL`, one script."""
    get_query = getattr(conn, "get_reset_query", None)  # asyncpg >= 0.30
    query: str = get_query() if get_query is not None else conn._get_reset_query()
    script = _RESET_SCRIPTS.get(query)
    if script is None:
        script = f"{query.rstrip().rstrip(';')};\n{_RESET_SQL}" if query else _RESET_SQL
        if len(_RESET_SCRIPTS) < 64:
            _RESET_SCRIPTS[query] = script
    return script


def _forget_transaction(conn: Any) -> None:
    """End asyncpg's record of a ``Connection.transaction()`` left open.

    As ``Connection.reset()`` does: while a top-level transaction object is
    recorded, the next ``transaction()`` would send ``SAVEPOINT`` instead of
    ``BEGIN``. The release counter is bumped as asyncpg's pool bumps it on
    release, so the borrower's stale transaction object (and its other
    statements and cursors) refuse to act on the next borrower's session.
    """
    if conn._top_xact is not None:
        conn._top_xact = None
        conn._pool_release_ctr += 1


#: Multi-host parameters poolkeeper's host loop consumes (see ``_hosts``);
#: ``host``/``port`` in the URL query still reach asyncpg for one host.
_ROLE_KEYS = frozenset({"target_session_attrs", "load_balance_hosts"})
_HOST_LOOP_KEYS = _ROLE_KEYS | {"host", "port"}


def url_to_kwargs(url: URL, connect_args: dict[str, Any]) -> dict[str, Any]:
    """Turn a parsed URL into ``asyncpg.connect`` arguments (``connect_args`` win).

    Keepalive settings are returned under the ``keepalives*`` keys, which the
    adapter pops before calling asyncpg.

    Raises:
        ConfigError: a typed parameter has a value of the wrong type.
    """
    kwargs = present(
        host=url.host,
        port=url.port,
        user=url.username,
        password=url.password,
        database=url.database,
    )
    typed_keys = _CONNECT_PARAMS.keys() | KEEPALIVE_PARAMS.keys()
    typed = {k: v for k, v in url.query.items() if k in typed_keys}
    kwargs.update(
        convert_query(url.scheme, typed, {**_CONNECT_PARAMS, **KEEPALIVE_PARAMS})
    )
    rest = {
        k: v
        for k, v in url.query.items()
        if k not in typed_keys and k not in _ROLE_KEYS
    }
    if rest:
        # asyncpg parses libpq-style DSN parameters itself; explicit keyword
        # arguments (the URL's host, user, ...) still take precedence.
        kwargs["dsn"] = "postgresql://?" + urlencode(rest)
    if "connect_timeout" in kwargs:
        kwargs.setdefault("timeout", kwargs.pop("connect_timeout"))
    kwargs.update(connect_args)
    kwargs.setdefault("timeout", DEFAULT_CONNECT_TIMEOUT)
    return kwargs


def _tuned(conn: Any, keepalive: Keepalive) -> Any:
    # asyncpg has no keepalive option; its transport attribute is private but
    # long-standing, and a missing one only means no tuning.
    transport = getattr(conn, "_transport", None)
    if transport is not None:
        keepalive.apply(transport.get_extra_info("socket"))
    return conn


async def _fetch_role_row(conn: Any) -> Any:
    return await conn.fetchrow(ROLE_QUERY)


def _role(conn: Any) -> Awaitable[Role]:
    return async_role_of(conn, _fetch_role_row)


#: ``asyncpg.connect`` with credential providers called per connect.
_connect = awith_providers(asyncpg.connect)


def _host_loop(
    target: HostTarget, kwargs: dict[str, Any], keepalive: Keepalive
) -> Callable[[], Awaitable[Any]]:
    """Connect through poolkeeper's host loop.

    asyncpg spends one ``timeout`` on all hosts together and has no
    ``load_balance_hosts``; here each host gets the whole timeout.
    """
    base = {k: v for k, v in kwargs.items() if k not in _HOST_LOOP_KEYS}
    per_host = float(base.get("timeout", DEFAULT_CONNECT_TIMEOUT))
    target = HostTarget(
        target.hosts, target.target_session_attrs, target.load_balance_hosts, per_host
    )

    async def connect_one(host: str | None, port: int | None) -> Any:
        conn = await _connect(**base, **present(host=host, port=port))
        return _tuned(conn, keepalive)

    async def close(conn: Any) -> None:
        conn.terminate()

    return lambda: connect_hosts_async(target, connect_one, _role, close)


class AsyncpgDriver:
    """Asyncio asyncpg adapter."""

    name = "asyncpg"
    is_async = True
    classify_connect_error = staticmethod(classify_asyncpg)
    #: The URL's ``target_session_attrs`` (None: built from a callable).
    target_session_attrs: str | None = None

    def __init__(self, connect: Callable[[], Awaitable[Any]]) -> None:
        self._connect = connect

    @classmethod
    def from_url(cls, url: URL, connect_args: dict[str, Any]) -> AsyncpgDriver:
        """Build the adapter for a parsed URL.

        Args:
            url: The parsed ``postgresql+asyncpg://`` URL.
            connect_args: Extra ``asyncpg.connect`` arguments (plus
                ``keepalives*``); they win over the URL and the defaults.
        """
        kwargs = url_to_kwargs(url, connect_args)
        keepalive = Keepalive.pop_from(kwargs)
        target = host_target(
            url, connect_args, timeout_keys=("timeout", "connect_timeout")
        )
        if not target.is_plain:
            driver = cls(_host_loop(target, kwargs, keepalive))
        else:

            async def connect() -> Any:
                return _tuned(await _connect(**kwargs), keepalive)

            driver = cls(connect)
        driver.target_session_attrs = target.target_session_attrs
        return driver

    async def connect(self) -> Any:
        return await self._connect()

    def transaction_status(self, conn: Any) -> TxStatus:
        return _INTRANS if conn.is_in_transaction() else _IDLE

    def is_broken(self, conn: Any) -> bool:
        return bool(conn.is_closed())

    @staticmethod
    def is_idle(conn: Any) -> bool:
        # Open, outside a transaction (the server's view and asyncpg's own),
        # and nothing a borrower left to clear (see clear_state).
        return not (
            conn.is_closed()
            or conn.is_in_transaction()
            or conn._top_xact is not None
            or conn._listeners
            or conn._log_listeners
            # Attribute reads only (no calls): this runs on every return.
            or conn._termination_listeners.changed
            or (_QUERY_LOGGERS and conn._query_loggers.changed)
        )

    @staticmethod
    def baseline(conn: Any) -> None:
        """Remember the termination listeners and query loggers ``configure`` added."""
        for attr in _KEPT:
            keep(conn, attr)

    async def clear_state(self, conn: Any) -> None:
        """Drop what a borrower left on the connection object, as asyncpg's pool does.

        asyncpg's record of an open ``Connection.transaction()`` is dropped (the
        transaction itself was ended by :meth:`commit` or :meth:`rollback`);
        notification and log listeners are removed, and the server is told
        ``UNLISTEN *`` if there were notification listeners (the only round
        trip, paid only by a borrower who left some); termination listeners
        and query loggers go back to those ``configure`` added.
        """
        _forget_transaction(conn)
        conn._log_listeners.clear()
        for attr in _KEPT:
            restore(conn, attr)
        if conn._listeners:
            conn._listeners.clear()
            await conn.execute("UNLISTEN *")

    def quiet(self, conn: Any) -> float | None:
        """Seconds since data last moved on the connection's socket (None: unknown)."""
        transport = getattr(conn, "_transport", None)
        sock = transport.get_extra_info("socket") if transport is not None else None
        return quiet_seconds(sock.fileno()) if sock is not None else None

    def abort(self, conn: Any) -> None:
        """Cut the connection off at once so a blocked call fails (``query_timeout``)."""
        if not conn.is_closed():
            conn.terminate()

    @staticmethod
    def settled(conn: Any) -> bool:
        """Whether ``conn`` is open and between messages (see
        :func:`~poolkeeper.drivers.base.settled_check`).

        asyncpg answers a command interrupted by a cancelled task with a
        cancel request and reads the rest of the reply in the background;
        while it does, its protocol is "cancelling". Once done (see
        :meth:`wait_settled`), the connection is between messages, which is
        what asyncpg's own pool waits for before it resets a returned
        connection (asyncpg 0.32: ``_is_cancelling``,
        ``_wait_for_cancellation``, private but used by its pool).
        """
        return not conn.is_closed() and not conn._protocol._is_cancelling()

    @staticmethod
    async def wait_settled(conn: Any) -> None:
        """Wait until asyncpg has finished cancelling an interrupted command."""
        if not conn.is_closed() and conn._protocol._is_cancelling():
            await conn._protocol._wait_for_cancellation()

    async def commit(self, conn: Any) -> None:
        _forget_transaction(conn)
        await conn.execute("COMMIT")

    async def rollback(self, conn: Any) -> None:
        _forget_transaction(conn)
        await conn.execute("ROLLBACK")

    async def session_role(self, conn: Any) -> Role:
        """Read the session's role with one query (:data:`~poolkeeper.drivers._hosts.ROLE_QUERY`),
        leaving no transaction open: the pool asks it of a connection whose
        server turned suspect (see ``_hoststate``)."""
        return role_from(*(await conn.fetchrow(ROLE_QUERY)))  # autocommit

    async def ping(self, conn: Any) -> None:
        await conn.execute("SELECT 1")

    async def reset_session(self, conn: Any) -> None:
        """Roll back and clear session state, keeping asyncpg's statement cache valid.

        What ``Connection.reset()`` does (roll back, close cursors, unlisten,
        reset settings, release advisory locks, drop listeners and asyncpg's
        record of a transaction), then temporary tables, sequence caches,
        cached plans and ``SET ROLE``/``SET SESSION AUTHORIZATION`` are
        discarded, all in one round trip. Prepared statements are kept on
        purpose (see :data:`_RESET_SQL`).
        """
        # One round trip: what ``Connection.reset()`` does client-side, then
        # its reset query and ours in one simple-protocol message (asyncpg's
        # execute() without arguments sends a script as one Query message).
        _forget_transaction(conn)
        conn._listeners.clear()
        conn._log_listeners.clear()
        script = _reset_script(conn)
        if conn.is_in_transaction():
            script = "ROLLBACK;\n" + script
        await conn.execute(script)

    async def close(self, conn: Any) -> None:
        if conn.is_closed():
            return
        try:
            await asyncio.wait_for(conn.close(), CLOSE_TIMEOUT)
        except Exception:
            # A slow or failed goodbye: drop the socket, close must not raise.
            conn.terminate()
        except BaseException:
            conn.terminate()
            raise
