"""Argument validation and URL parsing.

Everything a user passes to a pool constructor is checked here, before any
thread, task or socket exists, so that a bad argument fails at once with an
error naming the argument and the range it accepts.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from poolkeeper.errors import ConfigError

#: Pool defaults, as fixed by the public contract.
DEFAULT_MIN_SIZE = 1
DEFAULT_MAX_SIZE = 10
DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_WAITING = 0
DEFAULT_MAX_LIFETIME = 3600.0
DEFAULT_MAX_IDLE = 600.0
DEFAULT_MAX_CONNECTING = 2
DEFAULT_RECONNECT_MIN = 0.05
DEFAULT_RECONNECT_MAX = 5.0
DEFAULT_RECONNECT_FAST_INTERVAL = 0.05
DEFAULT_VALIDATE_AFTER = 0.5
#: Checkout validation policies (see the pool's ``validate`` argument).
VALIDATE_POLICIES = ("auto", "always", "idle", "never")


@dataclass(frozen=True)
class URL:
    """A parsed ``dialect+driver://user:pass@host:port/database?k=v`` URL.

    The password, and query parameters that carry secrets, are never shown
    by ``repr`` or :meth:`redacted`.
    """

    dialect: str
    driver: str | None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    host: str | None = None
    port: int | None = None
    database: str | None = None
    query: Mapping[str, str] = field(default_factory=dict)
    hosts: tuple[tuple[str | None, int | None], ...] = ()
    """Every ``(host, port)`` the URL names, in order (libpq's multi-host
    form ``h1:5432,h2:5433``); ``host``/``port`` are the first of them."""

    def __repr__(self) -> str:
        return f"URL({self.redacted()!r})"

    @property
    def scheme(self) -> str:
        """The scheme as written: ``dialect`` or ``dialect+driver``."""
        return f"{self.dialect}+{self.driver}" if self.driver else self.dialect

    def redacted(self) -> str:
        """Render the URL with the password replaced by ``***``."""
        auth = ""
        if self.username is not None:
            auth = self.username
            if self.password is not None:
                auth += ":***"
            auth += "@"
        pairs = self.hosts or ((self.host, self.port),)
        hostport = ",".join(_render_host(h, p) for h, p in pairs)
        db = f"/{self.database}" if self.database is not None else ""
        query = "&".join(
            f"{k}={'***' if _is_secret_key(k) else v}" for k, v in self.query.items()
        )
        return f"{self.scheme}://{auth}{hostport}{db}" + (f"?{query}" if query else "")


def parse_url(url: str) -> URL:
    """Parse a database URL.

    Percent-encoded characters in the user name, password and database are
    decoded; query parameters are kept as strings for the driver.

    Raises:
        ConfigError: ``url`` is not of the form ``scheme://...``.
    """
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(
            f"connect: expected a URL like 'postgresql://user@host/db' or a "
            f"callable, got {_safe_repr(url)}"
        )
    scheme, _, rest = url.partition("://")
    dialect, _, driver = scheme.lower().partition("+")
    if dialect == "sqlite":
        # sqlite:///relative.db, sqlite:////abs/path.db, sqlite:///:memory:
        path, _, qs = rest.partition("?")
        filename = unquote(path[1:] if path.startswith("/") else path) or ":memory:"
        return URL(
            dialect, driver or None, database=filename, query=dict(parse_qsl(qs))
        )
    try:
        parts = urlsplit(f"x://{rest}")
    except ValueError as exc:  # "Invalid IPv6 URL": an unclosed bracket
        raise ConfigError(
            f"connect: {_redact_raw(url)} is not a valid URL ({exc})"
        ) from None
    hosts = _split_hosts(parts.netloc.rpartition("@")[2], url)
    if len(hosts) > 1:
        # urlsplit reads one host only: parse the user-info from a URL
        # naming just the first host, and keep the list from _split_hosts.
        userinfo, at, _ = parts.netloc.rpartition("@")
        parts = parts._replace(netloc=f"{userinfo}{at}localhost")
    host, port = hosts[0] if hosts else (None, None)
    database = unquote(parts.path[1:]) if len(parts.path) > 1 else None
    return URL(
        dialect=dialect,
        driver=driver or None,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        host=host,
        port=port,
        database=database,
        query=dict(parse_qsl(parts.query, keep_blank_values=True)),
        hosts=hosts,
    )


def _split_hosts(hostlist: str, url: str) -> tuple[tuple[str | None, int | None], ...]:
    """Split ``h1:5432,[::1]:5433,%2Ftmp`` into ``(host, port)`` pairs, as libpq does.

    A host may be empty (libpq's default), an IPv6 address in brackets, or a
    percent-encoded unix socket directory.

    Raises:
        ConfigError: a port is not a number in 0..65535, or a bracket is unclosed.
    """
    if not hostlist:
        return ()
    pairs: list[tuple[str | None, int | None]] = []
    for item in hostlist.split(","):
        host, port_text = item, ""
        if item.startswith("["):
            end = item.find("]")
            if end < 0 or (end + 1 < len(item) and item[end + 1] != ":"):
                raise ConfigError(
                    f"connect: host {item!r} in {_redact_raw(url)} is not a valid "
                    "bracketed IPv6 address"
                )
            host, port_text = item[1:end], item[end + 2 :]
        elif ":" in item:
            host, _, port_text = item.rpartition(":")
        port = None
        if port_text:
            if not port_text.isdigit() or int(port_text) > 65535:
                raise ConfigError(
                    f"connect: the port in {_redact_raw(url)} is not a number in "
                    "0..65535"
                )
            port = int(port_text)
        pairs.append((unquote(host) or None, port))
    return tuple(pairs)


def _render_host(host: str | None, port: int | None) -> str:
    text = host or ""
    if ":" in text:
        text = f"[{text}]"
    elif "/" in text:
        text = quote(text, safe="")
    return text + (f":{port}" if port is not None else "")


def _redact_raw(url: str) -> str:
    """Mask the password of a URL as written, even a malformed one.

    The user-info ends at the last ``@`` before the query string, so a
    password with an unencoded ``@``, ``/``, ``?`` or ``#`` is masked whole
    (a plain split at the first ``/`` would leave half of it showing).
    Query parameters that carry secrets (``password=``, ``sslpassword=``,
    ``ssl_key_password=``...) are masked too. A string that is not a URL
    comes back unchanged.
    """
    scheme, sep, rest = url.partition("://")
    first_at = rest.find("@")
    if first_at >= 0:
        ends = [
            i for i in (rest.find("?", first_at), rest.find("#", first_at)) if i >= 0
        ]
        at = rest.rfind("@", 0, min(ends, default=len(rest)))
        user, colon, _password = rest[:at].partition(":")
        if colon and "/" not in user:
            rest = f"{user}:***{rest[at:]}"
    path, qmark, query = rest.partition("?")
    if qmark:
        pairs = []
        for pair in query.split("&"):
            key, eq, _value = pair.partition("=")
            if eq and _is_secret_key(key):
                pair = f"{key}=***"
            pairs.append(pair)
        rest = f"{path}?{'&'.join(pairs)}"
    return f"{scheme}{sep}{rest}"


def _is_secret_key(key: str) -> bool:
    """Tell whether a URL query or ``connect_args`` key names a secret."""
    key = unquote(key).lower()
    return any(word in key for word in ("pass", "secret", "token"))


def secrets_of(
    url: str | None, connect_args: Mapping[str, Any] | None
) -> tuple[str, ...]:
    """Return the secret strings a URL and ``connect_args`` carry, longest first.

    The pool scrubs them from driver error messages before logging or
    re-raising them in its own messages, in case a driver quotes its
    connection string.
    """
    found: set[str] = set()
    if url is not None and "://" in url:
        try:
            parsed = parse_url(url)
        except ConfigError:
            parsed = None
        if parsed is not None:
            if parsed.password:
                found.add(parsed.password)
            found.update(v for k, v in parsed.query.items() if _is_secret_key(k) and v)
    for key, value in (connect_args or {}).items():
        found.update(secrets_in_arg(str(key), value))
    return tuple(sorted(found, key=len, reverse=True))


def secrets_in_arg(key: str, value: object) -> set[str]:
    """Return the secret strings one ``connect_args`` item carries.

    Its value when the key names a secret; the passwords inside it when it is
    a whole connection string passed through (psycopg's
    ``connect_args={"dsn": "host=... password=..."}``, a URL). Used for fixed
    values and for what a credential provider returns.
    """
    if not isinstance(value, str) or not value:
        return set()
    if _is_secret_key(key):
        return {value}
    return _secrets_in_conninfo(value)


# `password=secret` or `password='a quoted \' secret'` in a libpq-style string.
_CONNINFO_PASSWORD = re.compile(
    r"(?:^|\s)(?:password|passwd)\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE
)


def _secrets_in_conninfo(text: str) -> set[str]:
    """Return the passwords a libpq keyword string or a URL in ``text`` carries."""
    found: set[str] = set()
    for match in _CONNINFO_PASSWORD.finditer(text):
        value = match.group(1)
        if value.startswith("'"):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        if value:
            found.add(value)
    if "://" in text:
        try:
            parts = urlsplit(text.strip())
            password = parts.password
        except ValueError:
            return found
        if password:
            found.update({password, unquote(password)})
        found.update(v for k, v in parse_qsl(parts.query) if _is_secret_key(k) and v)
    return found


def scrub(text: str, secrets: Iterable[str]) -> str:
    """Replace every secret in ``text`` (as is, or percent-encoded) with ``***``."""
    for secret in secrets:
        text = text.replace(secret, "***")
        quoted = quote(secret, safe="")
        if quoted != secret:
            text = text.replace(quoted, "***")
    return text


def _safe_repr(value: object) -> str:
    if isinstance(value, str):
        return repr(_redact_raw(value))
    return f"{type(value).__name__} object"


def redact(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``."""
    return _redact_raw(url)


@dataclass(frozen=True)
class PoolConfig:
    """Validated pool settings (see the pool constructors for their meaning)."""

    min_size: int = DEFAULT_MIN_SIZE
    max_size: int = DEFAULT_MAX_SIZE
    timeout: float = DEFAULT_TIMEOUT
    max_waiting: int = DEFAULT_MAX_WAITING
    max_lifetime: float | None = DEFAULT_MAX_LIFETIME
    max_idle: float | None = DEFAULT_MAX_IDLE
    max_uses: int | None = None
    max_connecting: int = DEFAULT_MAX_CONNECTING
    reconnect_min: float = DEFAULT_RECONNECT_MIN
    reconnect_max: float = DEFAULT_RECONNECT_MAX
    reconnect_fast_interval: float | None = DEFAULT_RECONNECT_FAST_INTERVAL
    lifetime_jitter: float = 0.05
    validate: str = "auto"
    validate_after: float = DEFAULT_VALIDATE_AFTER
    keepalive: float | None = None
    leak_timeout: float | None = None
    query_timeout: float | None = None
    fair: bool | Literal["bounded"] = True
    role_check_interval: float | None = None

    def __post_init__(self) -> None:
        check_int("min_size", self.min_size, minimum=0)
        check_int("max_size", self.max_size, minimum=1)
        if self.min_size > self.max_size:
            raise ConfigError(
                f"min_size ({self.min_size}) must not exceed max_size ({self.max_size})"
            )
        check_seconds("timeout", self.timeout, allow_zero=True)
        check_int("max_waiting", self.max_waiting, minimum=0)
        check_seconds("max_lifetime", self.max_lifetime, optional=True)
        check_seconds("max_idle", self.max_idle, optional=True)
        if self.max_uses is not None:
            check_int("max_uses", self.max_uses, minimum=1)
        check_int("max_connecting", self.max_connecting, minimum=1)
        check_seconds("reconnect_min", self.reconnect_min)
        check_seconds("reconnect_max", self.reconnect_max)
        if self.reconnect_min > self.reconnect_max:
            raise ConfigError(
                f"reconnect_min ({self.reconnect_min}) must not exceed "
                f"reconnect_max ({self.reconnect_max})"
            )
        check_seconds(
            "reconnect_fast_interval", self.reconnect_fast_interval, optional=True
        )
        if self.validate not in VALIDATE_POLICIES:
            raise ConfigError(
                f"validate must be one of {', '.join(map(repr, VALIDATE_POLICIES))}, "
                f"got {self.validate!r}"
            )
        check_seconds("validate_after", self.validate_after, allow_zero=True)
        if not isinstance(self.fair, bool) and self.fair != "bounded":
            raise ConfigError(
                f"fair must be True, False or 'bounded', got {self.fair!r}"
            )
        check_seconds("keepalive", self.keepalive, optional=True)
        check_seconds("leak_timeout", self.leak_timeout, optional=True)
        check_seconds("query_timeout", self.query_timeout, optional=True)
        check_seconds("role_check_interval", self.role_check_interval, optional=True)
        if not 0.0 <= self.lifetime_jitter < 0.5:
            raise ConfigError(
                f"lifetime_jitter must be in [0, 0.5), got {self.lifetime_jitter!r}"
            )


def check_int(name: str, value: object, *, minimum: int) -> None:
    """Raise :class:`ConfigError` (a ``ValueError``) unless ``value`` is an int >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(
            f"{name} must be an integer >= {minimum}, got {type(value).__name__} "
            f"{value!r}"
        )
    if value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value}")


def check_seconds(
    name: str, value: object, *, optional: bool = False, allow_zero: bool = False
) -> None:
    """Raise :class:`ConfigError` (a ``ValueError``) unless ``value`` is a finite positive number of seconds."""
    if value is None and optional:
        return
    kind = "a number of seconds" + (" or None" if optional else "")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(
            f"{name} must be {kind}, got {type(value).__name__} {value!r}"
        )
    bound = ">= 0" if allow_zero else "> 0"
    if (
        math.isnan(value)
        or math.isinf(value)
        or value < 0
        or (value == 0 and not allow_zero)
    ):
        raise ConfigError(f"{name} must be {kind} {bound} and finite, got {value!r}")


def check_timeout_arg(timeout: object, default: float) -> float:
    """Resolve a per-call ``timeout=`` argument against the pool default."""
    if timeout is None:
        return default
    check_seconds("timeout", timeout, allow_zero=True)
    return float(timeout)  # type: ignore[arg-type]


def check_callable(name: str, value: object) -> None:
    """Raise ``TypeError`` unless ``value`` is None or callable."""
    if value is not None and not callable(value):
        raise TypeError(
            f"{name} must be a callable or None, got {type(value).__name__}"
        )


def check_connect_args(value: object) -> dict[str, Any]:
    """Return ``connect_args`` as a fresh dict, or raise ``TypeError``."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"connect_args must be a mapping, got {type(value).__name__}")
    return dict(value)


HookT = Callable[[Any], Any]

_pool_numbers = itertools.count(1)


def next_pool_name() -> str:
    """Return a short name unique in this process, for pools created without one."""
    return f"pool-{next(_pool_numbers)}"
