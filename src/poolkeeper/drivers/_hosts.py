"""PostgreSQL multi-host URLs: one meaning on every driver, one host loop.

A URL such as ``postgresql+asyncpg://u@h1:5432,h2:5433/db?target_session_attrs=
read-write&load_balance_hosts=random&connect_timeout=2`` means what libpq says
it means (https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-MULTIPLE-HOSTS):
try the hosts in order (or shuffled, with ``load_balance_hosts=random``),
give each one ``connect_timeout`` seconds, and keep the first session whose
role matches ``target_session_attrs``; with ``prefer-standby``, try every host
for a standby first, then every host again for any server.

psycopg 3 and psycopg2 hand the URL to libpq, which does all of it when it is
version 16 or newer (``load_balance_hosts`` is from 16, the role values other
than ``any``/``read-write`` from 14); psycopg 3 even runs the loop itself for
its async connections. asyncpg has no ``load_balance_hosts`` and spends one
``timeout`` on all hosts together, and aiopg drives libpq's asynchronous
connect, where libpq does not enforce ``connect_timeout`` at all. For those
(and for an older libpq) poolkeeper runs the loop itself, here: the driver
only supplies "connect to this one host" and "read this session's role".

The role of a session is read from the parameters the server reports on its
own (``in_hot_standby`` and ``default_transaction_read_only``, PostgreSQL 14
and newer), so checking it costs no round trip; an older server is asked
(``pg_is_in_recovery()``, ``transaction_read_only``).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from poolkeeper._config import URL
from poolkeeper.errors import ConfigError

#: The values libpq accepts for ``target_session_attrs``.
TARGET_SESSION_ATTRS = (
    "any",
    "read-write",
    "read-only",
    "primary",
    "standby",
    "prefer-standby",
)
#: The values libpq accepts for ``load_balance_hosts``.
LOAD_BALANCE_HOSTS = ("disable", "random")

#: What a session is: ``primary`` (writable, not in recovery), ``standby``
#: (a replica in recovery), ``read-only`` (not in recovery but read-only by
#: default, what a switchover leaves on the old primary), or ``unknown``.
Role = Literal["primary", "standby", "read-only", "unknown"]

#: The query asked of a server that does not report its role (before 14).
ROLE_QUERY = (
    "SELECT pg_catalog.pg_is_in_recovery()::text, "
    "pg_catalog.current_setting('transaction_read_only')"
)

_ON = frozenset({"on", "true", "t", "1"})

HostPort = tuple[str | None, int | None]


@dataclass(frozen=True)
class HostInfo:
    """Where a connection went and what the server was, as last reported."""

    host: str | None
    """Host name, IP address or unix socket directory (None: libpq's default)."""
    port: int | None
    """Port (None: the driver's default)."""
    role: Role
    """``primary``, ``standby``, ``read-only`` or ``unknown``."""


def role_from(in_hot_standby: object, read_only: object) -> Role:
    """Classify a session from ``in_hot_standby`` and ``default_transaction_read_only``.

    Values are the server's text (``on``/``off``, or ``true``/``false`` from
    :data:`ROLE_QUERY`); ``None`` means not reported.
    """
    if in_hot_standby is None:
        return "unknown"
    if str(in_hot_standby).lower() in _ON:
        return "standby"
    if read_only is not None and str(read_only).lower() in _ON:
        return "read-only"
    return "primary"


def role_of(conn: Any, fetch_role_row: Callable[[Any], Sequence[Any]]) -> Role:
    """Return a connection's role: the driver's report, else :data:`ROLE_QUERY`'s.

    ``fetch_role_row`` runs :data:`ROLE_QUERY` on ``conn`` and returns its row.
    """
    role = host_of(conn).role
    return role_from(*fetch_role_row(conn)) if role == "unknown" else role


async def async_role_of(
    conn: Any, fetch_role_row: Callable[[Any], Awaitable[Sequence[Any]]]
) -> Role:
    """Return a connection's role, as :func:`role_of`, for an asyncio driver."""
    role = host_of(conn).role
    return role_from(*(await fetch_role_row(conn))) if role == "unknown" else role


#: Server answers that say a session's server is leaving its role: read-only
#: transaction (a primary demoted by a switchover), administrator command,
#: crash shutdown, cannot connect now (shutting down or starting up).
FAILOVER_SQLSTATES = frozenset({"25006", "57P01", "57P02", "57P03"})


def is_failover_error(error: BaseException | None) -> bool:
    """Tell whether ``error`` (or what caused it) carries a SQLSTATE of
    :data:`FAILOVER_SQLSTATES` (psycopg's ``sqlstate``, psycopg2's and aiopg's
    ``pgcode``, asyncpg's ``sqlstate``)."""
    for _ in range(3):
        if error is None:
            return False
        code = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
        if code in FAILOVER_SQLSTATES:
            return True
        error = error.__cause__
    return False


def role_matters(want: str) -> bool:
    """Tell whether some role fails ``target_session_attrs=want`` (so a
    connection's role is worth reading whenever it is pinged anyway)."""
    return want not in ("any", "prefer-standby")


def role_matches(want: str, role: Role | str) -> bool:
    """Tell whether a session of ``role`` satisfies ``target_session_attrs=want``."""
    if want in ("any", "prefer-standby"):
        return True
    if want == "read-write":
        return role == "primary"
    if want == "read-only":
        return role in ("standby", "read-only")
    if want == "primary":
        return role in ("primary", "read-only")
    return role == "standby"  # standby


def _one_of(name: str, value: object, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
    return str(value)


def _split_list(name: str, value: object) -> list[str]:
    if isinstance(value, int) and not isinstance(value, bool):
        return [str(value)]
    if isinstance(value, list | tuple):  # asyncpg takes lists of hosts and ports
        return [str(item) for item in value]
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be a string, got {type(value).__name__}")
    return [part.strip() for part in value.split(",")]


@dataclass(frozen=True)
class HostTarget:
    """The validated multi-host part of a PostgreSQL URL (and ``connect_args``)."""

    hosts: tuple[HostPort, ...] = ()
    target_session_attrs: str = "any"
    load_balance_hosts: str = "disable"
    connect_timeout: float | None = None

    @property
    def is_plain(self) -> bool:
        """True for one host (or none) with no role wanted: nothing to loop over."""
        return (
            len(self.hosts) <= 1
            and self.target_session_attrs == "any"
            and self.load_balance_hosts == "disable"
        )

    def attempts(
        self, shuffle: Callable[[list[HostPort]], None]
    ) -> list[tuple[HostPort, str]]:
        """Return the ``((host, port), wanted role)`` pairs to try, in order."""
        order = list(self.hosts or ((None, None),))
        if self.load_balance_hosts == "random":
            shuffle(order)
        want = self.target_session_attrs
        if want == "prefer-standby":
            return [(hp, "standby") for hp in order] + [(hp, "any") for hp in order]
        return [(hp, want) for hp in order]


def host_target(
    url: URL, connect_args: Mapping[str, Any], *, timeout_keys: tuple[str, ...]
) -> HostTarget:
    """Read and validate the hosts, ports, role and balancing a URL asks for.

    ``connect_args`` win over the URL, and a ``host``/``port`` query parameter
    (libpq's ``?host=/tmp`` form) over the URL's authority. A port list of
    one entry applies to every host, as in libpq.

    Args:
        url: The parsed URL.
        connect_args: The driver arguments the pool was given.
        timeout_keys: Keys naming the per-host connect timeout, first wins.

    Raises:
        ConfigError: a value is not one libpq accepts; the message names the
            parameter.
    """
    merged: dict[str, Any] = {**url.query, **connect_args}
    hosts: list[HostPort] = list(url.hosts)
    if "host" in merged and merged["host"] is not None:
        hosts = [(h or None, None) for h in _split_list("host", merged["host"])]
        if not ("port" in merged and merged["port"] is not None):
            ports = [p for _, p in url.hosts] or [None]
            if len(ports) == 1:
                hosts = [(h, ports[0]) for h, _ in hosts]
    if "port" in merged and merged["port"] is not None:
        hosts = _with_ports(
            hosts or [(None, None)], _split_list("port", merged["port"])
        )
    tsa = _one_of(
        "target_session_attrs",
        merged.get("target_session_attrs", "any"),
        TARGET_SESSION_ATTRS,
    )
    lbh = _one_of(
        "load_balance_hosts",
        merged.get("load_balance_hosts", "disable"),
        LOAD_BALANCE_HOSTS,
    )
    timeout: float | None = None
    for key in timeout_keys:
        if merged.get(key) is not None:
            timeout = _seconds(key, merged[key])
            break
    return HostTarget(tuple(hosts), tsa, lbh, timeout)


def _with_ports(hosts: list[HostPort], ports: list[str]) -> list[HostPort]:
    if len(ports) not in (1, len(hosts)):
        raise ConfigError(
            f"port lists {len(ports)} ports for {len(hosts)} hosts; give one port "
            "for all hosts or one per host"
        )
    numbers: list[int | None] = []
    for text in ports:
        if text == "":
            numbers.append(None)
        elif not text.isdigit() or int(text) > 65535:
            raise ConfigError(f"port must be a number in 0..65535, got {text!r}")
        else:
            numbers.append(int(text))
    if len(numbers) == 1:
        numbers *= len(hosts)
    return [(h, p) for (h, _), p in zip(hosts, numbers, strict=True)]


def _seconds(name: str, value: object) -> float:
    """Read a connect timeout; 0 means no limit, as in libpq."""
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(
            f"{name} must be a number of seconds, got {value!r}"
        ) from None
    if not 0 <= seconds < float("inf"):
        raise ConfigError(
            f"{name} must be a finite number of seconds >= 0 (0: no limit), "
            f"got {value!r}"
        )
    return seconds


class NoMatchingHost(ConnectionError):
    """Every host was reached or tried, and none had the role asked for."""


class _HostLoop:
    """The decisions of one multi-host connect, shared by the sync and async loops.

    ``tries`` lists what to attempt; each outcome is reported with
    :meth:`failed` or :meth:`reached`; :meth:`error` builds the exception
    when nothing was accepted.
    """

    def __init__(self, target: HostTarget, rng: random.Random | None) -> None:
        self.target = target
        self.tries = target.attempts((rng or random).shuffle)
        self._last_error: BaseException | None = None
        self._mismatched = False
        self._seen: list[str] = []

    def failed(self, hostport: HostPort, exc: BaseException) -> None:
        self._last_error = exc
        self._seen.append(f"{_where(hostport)} failed: {str(exc).strip()[:200]}")

    def reached(self, hostport: HostPort, want: str, role: Role) -> bool:
        if role_matches(want, role):
            return True
        self._mismatched = True
        self._seen.append(f"{_where(hostport)} is {role}")
        return False

    def error(self) -> BaseException:
        what = "; ".join(self._seen) or "no host"
        message = (
            f"no host accepted a session with target_session_attrs="
            f"{self.target.target_session_attrs}: {what}"
        )
        if self._last_error is not None and not self._mismatched:
            # Only connect failures: the driver's own last error says it best.
            return self._last_error
        return NoMatchingHost(message)


def _where(hostport: HostPort) -> str:
    host, port = hostport
    return f"{host or '(default)'}:{port if port is not None else '(default)'}"


def connect_hosts(
    target: HostTarget,
    connect_one: Callable[[str | None, int | None], Any],
    role_of: Callable[[Any], Role],
    close: Callable[[Any], None],
    rng: random.Random | None = None,
) -> Any:
    """Run the libpq host loop with a sync driver; return the accepted connection.

    Args:
        target: What to try.
        connect_one: Connect to one host and port, within the per-host timeout.
        role_of: Read a new connection's role (see :func:`role_from`).
        close: Close a connection that was not accepted.
        rng: Randomness for ``load_balance_hosts=random`` (tests pass a seeded one).

    Raises:
        Exception: the last connect error when no host could be reached,
            else :class:`NoMatchingHost`.
    """
    loop = _HostLoop(target, rng)
    for hostport, want in loop.tries:
        try:
            conn = connect_one(*hostport)
        except Exception as exc:
            loop.failed(hostport, exc)
            continue
        try:
            if loop.reached(hostport, want, role_of(conn)):
                return conn
        except Exception as exc:
            loop.failed(hostport, exc)
        close(conn)
    raise loop.error()


async def connect_hosts_async(
    target: HostTarget,
    connect_one: Callable[[str | None, int | None], Awaitable[Any]],
    role_of: Callable[[Any], Awaitable[Role]],
    close: Callable[[Any], Awaitable[None]],
    rng: random.Random | None = None,
) -> Any:
    """Run the libpq host loop with an asyncio driver (see :func:`connect_hosts`).

    Each attempt, role check included, is bounded by the per-host
    ``connect_timeout`` when one is set.
    """
    loop = _HostLoop(target, rng)
    limit = target.connect_timeout or None  # 0: no limit
    for hostport, want in loop.tries:
        try:
            conn = await asyncio.wait_for(
                connect_one(*hostport), target.connect_timeout
            )
        except Exception as exc:
            loop.failed(hostport, exc)
            continue
        accepted = False
        try:
            role = await asyncio.wait_for(role_of(conn), limit)
            accepted = loop.reached(hostport, want, role)
        except Exception as exc:
            loop.failed(hostport, exc)
        finally:
            if not accepted:
                await close(conn)
        if accepted:
            return conn
    raise loop.error()


def host_of(conn: Any) -> HostInfo:
    """Say which host and port a PostgreSQL connection reached, and its role.

    Works on psycopg 3, psycopg2, asyncpg and aiopg connections, with no I/O:
    the role comes from what the server last reported (``in_hot_standby``,
    ``default_transaction_read_only``; PostgreSQL 14 and newer, else
    ``unknown``). A switchover is seen after the connection's next statement,
    when the server reports the change.

    Raises:
        TypeError: ``conn`` is not a connection of one of those drivers.
    """
    root = type(conn).__module__.partition(".")[0]
    if root == "aiopg":
        conn, root = conn.raw, "psycopg2"
    status: Callable[[str], object]
    if root == "psycopg":
        host, port, status = conn.info.host, conn.info.port, conn.info.parameter_status
    elif root == "psycopg2":
        host, port, status = conn.info.host, conn.info.port, conn.get_parameter_status
    elif root == "asyncpg":
        host, port = _asyncpg_address(conn)
        settings = conn.get_settings()

        def status(name: str) -> object:
            return getattr(settings, name, None)

    else:
        raise TypeError(
            f"host_of() needs a psycopg, psycopg2, asyncpg or aiopg connection, "
            f"got {type(conn).__module__}.{type(conn).__qualname__}"
        )
    role = role_from(status("in_hot_standby"), status("default_transaction_read_only"))
    return HostInfo(host, int(port) if port is not None else None, role)


def _asyncpg_address(conn: Any) -> HostPort:
    # asyncpg keeps the address it connected to in a private attribute: a
    # (host, port) tuple, or the unix socket's path ".../.s.PGSQL.5432".
    addr = getattr(conn, "_addr", None)
    if isinstance(addr, tuple):
        return str(addr[0]), int(addr[1])
    if isinstance(addr, str):
        directory, _, name = addr.rpartition("/")
        suffix = name.rpartition(".")[2]
        return directory, int(suffix) if suffix.isdigit() else None
    return None, None
