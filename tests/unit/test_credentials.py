"""Credential providers and MySQL TLS parameters, without a server."""

from __future__ import annotations

import contextlib
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import poolkeeper
from poolkeeper import ConfigError
from poolkeeper._config import parse_url, scrub
from poolkeeper._credentials import (
    ConnectArgs,
    Provider,
    Secrets,
    is_auth_failure,
    wrap_providers,
)
from poolkeeper.drivers._mysql_tls import MysqlTls, split_tls

# --- providers ---------------------------------------------------------------


def test_only_plain_callables_become_providers() -> None:
    def row_factory(cursor: Any) -> Any:  # psycopg's kind of argument
        return cursor

    wrapped = wrap_providers(
        {
            "password": lambda: "s3cret",
            "row_factory": row_factory,
            "cursorclass": dict,
            "user": "u",
        },
        Secrets(),
        is_async=False,
    )
    assert isinstance(wrapped["password"], Provider)
    assert wrapped["row_factory"] is row_factory
    assert wrapped["cursorclass"] is dict
    assert wrapped["user"] == "u"
    assert "s3cret" not in repr(wrapped["password"])


def test_coroutine_provider_is_a_config_error_for_a_sync_pool() -> None:
    async def token() -> str:
        return "t"

    with pytest.raises(ConfigError, match=r"connect_args\['password'\].*AsyncPool"):
        wrap_providers({"password": token}, Secrets(), is_async=False)


def test_provider_values_are_masked() -> None:
    secrets = Secrets(["fixed-one"])
    tokens = iter(["tok-A", "tok-B"])
    args = ConnectArgs(
        wrap_providers({"password": lambda: next(tokens)}, secrets, is_async=False)
    )
    assert args.resolve()["password"] == "tok-A"
    assert args.resolve()["password"] == "tok-B"
    text = scrub("failed for tok-A, tok-B and fixed-one", secrets)
    assert text == "failed for ***, *** and ***"


def test_secrets_keep_only_the_recent_values() -> None:
    secrets = Secrets(keep=2)
    secrets.add(["one1"])
    secrets.add(["two2"])
    secrets.add(["three"])
    assert set(secrets) == {"two2", "three"}


class AuthError(Exception):
    sqlstate = "28P01"


def test_auth_failure_asks_the_provider_once_more() -> None:
    calls: list[str] = []
    values = iter(["old", "new", "newer"])

    def connect(password: str) -> str:
        calls.append(password)
        if password == "old":
            raise AuthError("password authentication failed")
        return password

    args = ConnectArgs(
        wrap_providers({"password": lambda: next(values)}, Secrets(), is_async=False)
    )
    assert args.open(connect) == "new"
    assert calls == ["old", "new"]


def test_same_value_is_not_tried_twice() -> None:
    calls: list[str] = []

    def connect(password: str) -> str:
        calls.append(password)
        raise AuthError("password authentication failed")

    args = ConnectArgs(
        wrap_providers({"password": lambda: "bad"}, Secrets(), is_async=False)
    )
    with pytest.raises(AuthError):
        args.open(connect)
    assert calls == ["bad"]  # one attempt: an account lockout counts them


def test_other_errors_are_not_retried() -> None:
    calls = 0

    def connect(password: str) -> str:
        nonlocal calls
        calls += 1
        raise OSError("connection refused")

    values = iter(["a", "b"])
    args = ConnectArgs(
        wrap_providers({"password": lambda: next(values)}, Secrets(), is_async=False)
    )
    with pytest.raises(OSError, match="refused"):
        args.open(connect)
    assert calls == 1


@pytest.mark.anyio
async def test_async_provider_is_awaited() -> None:
    async def token() -> str:
        return "from-coroutine"

    async def connect(password: str) -> str:
        return password

    secrets = Secrets()
    args = ConnectArgs(wrap_providers({"password": token}, secrets, is_async=True))
    assert await args.aopen(connect) == "from-coroutine"
    assert "from-coroutine" in set(secrets)


class NoCredentials(Exception):
    """What a cloud SDK raises when the machine has no credentials."""


def no_token() -> str:
    raise NoCredentials("no cloud credentials found")


async def no_token_async() -> str:
    raise NoCredentials("no cloud credentials found")


# The provider raises before the driver is called: no server is reached.
UNREACHED = "127.0.0.1:9/test"


@contextlib.contextmanager
def raised_at_once(pool: Any) -> Iterator[None]:
    """Expect the provider's own error, well within the pool's 5 s timeout."""
    started = time.monotonic()
    with pytest.raises(NoCredentials, match="no cloud credentials"):
        yield
    assert time.monotonic() - started < 1.0
    assert pool.stats().connect_errors >= 1


def test_a_failing_provider_reaches_the_caller_at_once() -> None:
    pytest.importorskip("psycopg")
    url = f"postgresql+psycopg://u@{UNREACHED}"
    args = {"password": no_token}
    pool = poolkeeper.Pool(url, min_size=0, timeout=5, connect_args=args)
    with pool, raised_at_once(pool):
        pool.acquire()


@pytest.mark.anyio
async def test_a_failing_async_provider_reaches_the_caller_at_once() -> None:
    pytest.importorskip("asyncpg")
    url = f"postgresql+asyncpg://u@{UNREACHED}"
    args = {"password": no_token_async}
    async with poolkeeper.AsyncPool(
        url, min_size=0, timeout=5, connect_args=args
    ) as pool:
        with raised_at_once(pool):
            await pool.acquire()


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (AuthError("x"), True),
        (Exception(1045, "Access denied for user 'u'@'h'"), True),
        (Exception('FATAL:  password authentication failed for user "u"'), True),
        (Exception('database "x" does not exist'), False),
        (OSError("connection refused"), False),
    ],
)
def test_is_auth_failure(error: BaseException, expected: bool) -> None:
    assert is_auth_failure(error) is expected


# --- MySQL TLS parameters ----------------------------------------------------


@pytest.fixture
def pem(tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    path.write_text("not checked here\n")
    return str(path)


def tls_of(query: str, **connect_args: Any) -> MysqlTls | None:
    return split_tls(parse_url(f"mysql+pymysql://u@h/db?{query}"), connect_args)[1]


def test_modes_and_defaults(pem: str) -> None:
    assert tls_of("charset=utf8mb4") is None
    assert tls_of("ssl-mode=required") == MysqlTls("REQUIRED")
    assert tls_of(f"ssl-ca={pem}") == MysqlTls("VERIFY_CA", ca=pem)
    tls = tls_of(f"ssl-mode=VERIFY_IDENTITY&ssl-ca={pem}")
    assert tls is not None
    assert tls.enforced
    assert tls.mysqlclient_args() == {"ssl_mode": "VERIFY_IDENTITY", "ssl": {"ca": pem}}
    assert not MysqlTls("PREFERRED").enforced


def test_contexts() -> None:
    assert MysqlTls("DISABLED").pymysql_args() == {"ssl_disabled": True}
    assert MysqlTls("PREFERRED").pymysql_args() == {}
    ctx = MysqlTls("REQUIRED").context()
    assert ctx is not None
    assert ctx.verify_mode == ssl.CERT_NONE


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("ssl-mode=SOMETIMES", "ssl-mode='SOMETIMES'"),
        ("ssl-mode=DISABLED&ssl-ca={pem}", "ssl-ca"),
        ("ssl-mode=PREFERRED&ssl-cert={pem}&ssl-key={pem}", "ssl-cert"),
        ("ssl-mode=REQUIRED&ssl-ca={pem}", "ssl-ca"),
        ("ssl-mode=VERIFY_CA", "needs ssl-ca"),
        ("ssl-mode=VERIFY_IDENTITY", "needs ssl-ca"),
        ("ssl-mode=REQUIRED&ssl-cert={pem}", "ssl-key"),
        ("ssl-mode=VERIFY_CA&ssl-ca=/nonexistent/ca.pem", "ssl-ca='/nonexistent"),
        ("ssl-mode=REQUIRED&ssl_verify_cert=true", "ssl_verify_cert"),
    ],
)
def test_unsupported_combinations(pem: str, query: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace("?", r"\?")):
        tls_of(query.format(pem=pem))


def test_driver_tls_in_connect_args_clashes() -> None:
    with pytest.raises(ConfigError, match=r"\['ssl'\]"):
        tls_of("ssl-mode=REQUIRED", ssl={"ca": "x"})


@pytest.mark.parametrize("scheme", ["mysql+pymysql", "mysql+mysqldb"])
def test_ssl_mode_reaches_the_driver_arguments(scheme: str) -> None:
    module = pytest.importorskip(f"poolkeeper.drivers.{scheme.split('+')[1]}")
    kwargs = module.url_to_kwargs(
        parse_url(f"{scheme}://u@127.0.0.1/db?ssl-mode=DISABLED"), {}
    )
    expected = (
        {"ssl_disabled": True}
        if scheme.endswith("pymysql")
        else {"ssl_mode": "DISABLED"}
    )
    assert expected.items() <= kwargs.items()


@pytest.mark.parametrize(
    ("module", "scheme"),
    [
        ("psycopg", "postgresql+psycopg"),
        ("psycopg2", "postgresql+psycopg2"),
        ("asyncpg", "postgresql+asyncpg"),
        ("aiopg", "postgresql+aiopg"),
        ("pymysql", "mysql+pymysql"),
        ("aiomysql", "mysql+aiomysql"),
        ("mysqldb", "mysql+mysqldb"),
    ],
)
def test_a_provider_replaces_the_url_password(module: str, scheme: str) -> None:
    mod = pytest.importorskip(f"poolkeeper.drivers.{module}")
    secrets = Secrets()
    args = wrap_providers({"password": lambda: "fresh"}, secrets, is_async=True)
    kwargs = mod.url_to_kwargs(parse_url(f"{scheme}://u:in-url@127.0.0.1/db"), args)
    assert isinstance(kwargs["password"], Provider)
    assert ConnectArgs(kwargs).resolve()["password"] == "fresh"
