"""Bad input fails at construction with a typed error naming the argument."""

from __future__ import annotations

import copy
import logging
import pickle
import sys
import threading

import pytest

import poolkeeper
from poolkeeper import AsyncPool, ConfigError, Pool, PoolTimeout, TooManyWaiters
from poolkeeper._config import parse_url, redact


def connect() -> object:
    raise AssertionError("never called: construction must not connect")


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        ({"min_size": -1}, "min_size"),
        ({"max_size": 0}, "max_size"),
        ({"min_size": 5, "max_size": 2}, "min_size"),
        ({"timeout": -1}, "timeout"),
        ({"timeout": float("nan")}, "timeout"),
        ({"timeout": float("inf")}, "timeout"),
        ({"timeout": "30"}, "timeout"),
        ({"max_waiting": -1}, "max_waiting"),
        ({"max_lifetime": 0}, "max_lifetime"),
        ({"max_idle": -5.0}, "max_idle"),
        ({"max_uses": 0}, "max_uses"),
        ({"min_size": 1.5}, "min_size"),
        ({"max_size": True}, "max_size"),
        ({"max_connecting": 0}, "max_connecting"),
        ({"reconnect_min": 2.0, "reconnect_max": 1.0}, "reconnect_min"),
        ({"query_timeout": -1.0}, "query_timeout"),
        ({"query_timeout": 0}, "query_timeout"),
        ({"query_timeout": float("nan")}, "query_timeout"),
        ({"query_timeout": float("inf")}, "query_timeout"),
        ({"query_timeout": "1"}, "query_timeout"),
        ({"query_timeout": True}, "query_timeout"),
    ],
)
@pytest.mark.parametrize("cls", [Pool, AsyncPool])
def test_bad_arguments_name_the_argument(
    cls: type, kwargs: dict[str, object], names: str
) -> None:
    threads = threading.active_count()
    with pytest.raises(ValueError, match=names) as info:
        cls(connect, **kwargs)
    assert isinstance(info.value, ConfigError)
    assert threading.active_count() == threads  # nothing was started


def test_query_timeout_range_is_in_the_message() -> None:
    with pytest.raises(ConfigError) as info:
        Pool(connect, query_timeout=-0.5)
    assert "query_timeout must be a number of seconds or None > 0 and finite" in str(
        info.value
    )
    # None (the default) turns it off.
    Pool(connect, query_timeout=None)


@pytest.mark.parametrize(
    ("cls", "url"),
    [(Pool, "sqlite:///:memory:"), (AsyncPool, "sqlite+aiosqlite:///:memory:")],
)
def test_query_timeout_needs_a_driver_that_can_abort(cls: type, url: str) -> None:
    threads = threading.active_count()
    with pytest.raises(ConfigError, match=r"query_timeout is not supported by the \w+"):
        cls(url, query_timeout=1.0)
    assert threading.active_count() == threads


def test_bad_hook_and_connect_args_types() -> None:
    with pytest.raises(TypeError, match="check"):
        Pool(connect, check=42)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="connect_args"):
        Pool("sqlite:///:memory:", connect_args=[("a", 1)])  # type: ignore[call-overload]
    with pytest.raises(ConfigError, match="connect_args only applies to a URL"):
        Pool(connect, connect_args={"a": 1})
    with pytest.raises(ConfigError, match="URL string or a callable"):
        Pool(42)  # type: ignore[call-overload]


def test_unknown_scheme_lists_supported_ones() -> None:
    with pytest.raises(ConfigError) as info:
        Pool("oracle://scott:tiger@127.0.0.1/db")
    message = str(info.value)
    assert (
        "oracle" in message and "postgresql+asyncpg" in message and "sqlite" in message
    )
    assert "tiger" not in message


def test_sync_and_async_driver_mismatch() -> None:
    with pytest.raises(ConfigError, match="AsyncPool"):
        Pool("postgresql+asyncpg://postgres@127.0.0.1/test")
    with pytest.raises(ConfigError, match="sqlite"):
        AsyncPool("sqlite:///:memory:")


def test_missing_driver_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec

    def find_spec(name: str, *args: object) -> object:
        return None if name == "asyncpg" else real(name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    monkeypatch.delitem(sys.modules, "poolkeeper.drivers.asyncpg", raising=False)
    with pytest.raises(ConfigError, match="pip install 'asyncpg'"):
        AsyncPool("postgresql+asyncpg://postgres@127.0.0.1/test")


def test_bad_port_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="port"):
        Pool("postgresql://u:pw@127.0.0.1:notaport/db")


def test_passwords_are_redacted_everywhere() -> None:
    url = "postgresql://alice:s%40cr3t@127.0.0.1:5432/test"
    parsed = parse_url(url)
    assert parsed.password == "s@cr3t" and parsed.username == "alice"
    assert "s@cr3t" not in repr(parsed) and "cr3t" not in parsed.redacted()
    assert "cr3t" not in redact(url)
    pool = Pool(url)
    assert "cr3t" not in repr(pool) and "alice" in repr(pool)


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        ("postgresql://u:pa/ss@h/db", "pa/ss"),  # unencoded "/" in the password
        ("postgresql://u:p?ss@h/db", "p?ss"),
        ("postgresql://u:s@cr3t@h/db", "s@cr3t"),
        ("postgresql://h/db?password=s3cret&sslmode=require", "s3cret"),
        ("mysql://u:pw@h/db?ssl_key_password=k3y", "k3y"),
    ],
)
def test_redaction_of_awkward_urls(url: str, secret: str) -> None:
    assert secret not in redact(url)
    assert "h" in redact(url)
    try:
        shown = [repr(parse_url(url)), parse_url(url).redacted()]
    except ConfigError as exc:  # malformed: the error must not show it either
        shown = [str(exc)]
    assert all(secret not in text for text in shown)


def test_redaction_keeps_what_is_not_a_secret() -> None:
    url = "postgresql://u:pw@h:5432/db?sslmode=require&application_name=a@b"
    assert redact(url) == (
        "postgresql://u:***@h:5432/db?sslmode=require&application_name=a@b"
    )
    assert redact("sqlite:////tmp/a@b.db") == "sqlite:////tmp/a@b.db"


def test_no_password_in_logs_errors_or_repr(monkeypatch, caplog) -> None:
    """A driver that quotes its connection string must not leak the password."""
    from poolkeeper.presets import pgbouncer_transaction

    caplog.set_level(logging.DEBUG, logger="poolkeeper")
    secret, key_secret, arg_secret = "pk-Secr3t/pw", "pk-k3y", "pk-Arg-pw"
    url = (
        "postgresql://alice:pk-Secr3t%2Fpw@127.0.0.1:5432/test"
        f"?sslpassword={key_secret}"
    )
    pool = Pool(
        url, min_size=1, connect_args={"password": arg_secret}, name="secretive"
    )

    def echoing_connect() -> None:
        raise ConnectionError(
            f"could not connect with 'user=alice password={secret} "
            f"sslpassword={key_secret}' (also {arg_secret}, "
            "url postgresql://alice:pk-Secr3t%2Fpw@127.0.0.1)"
        )

    monkeypatch.setattr(pool._driver, "connect", echoing_connect)
    shown = [repr(pool)]
    with pytest.raises(PoolTimeout) as info:
        pool.open(wait=True, timeout=1.0)
    shown += [str(info.value), repr(info.value), repr(pool), caplog.text]
    shown += [r.getMessage() for r in caplog.records]
    with pytest.raises(ConfigError) as config_error:
        pgbouncer_transaction("mysql://alice:pk-Secr3t@h/db")
    shown.append(str(config_error.value))
    assert any("failed" in r.getMessage() for r in caplog.records)
    assert "alice" in repr(pool)
    for text in shown:
        for hidden in ("Secr3t", key_secret, arg_secret):
            assert hidden not in text, text


def test_sqlite_urls() -> None:
    assert parse_url("sqlite:///:memory:").database == ":memory:"
    assert parse_url("sqlite:///relative.db").database == "relative.db"
    assert parse_url("sqlite:////tmp/abs.db").database == "/tmp/abs.db"


def test_per_call_timeout_is_validated() -> None:
    with (
        Pool("sqlite:///:memory:", min_size=0) as pool,
        pytest.raises(ConfigError, match="timeout"),
    ):
        pool.acquire(timeout=-1)


@pytest.mark.parametrize(
    "error",
    [
        poolkeeper.PoolError("x", pool_name="p"),
        PoolTimeout("t", pool_name="p", timeout=1.5, waiting=3),
        poolkeeper.PoolClosed("c", pool_name="p"),
        TooManyWaiters("w", pool_name="p", waiting=7),
        ConfigError("bad"),
        poolkeeper.QueryTimeout("q", pool_name="p", timeout=2.0),
    ],
)
def test_errors_survive_pickle_and_copy(error: poolkeeper.PoolError) -> None:
    for clone in (
        pickle.loads(pickle.dumps(error)),
        copy.copy(error),
        copy.deepcopy(error),
    ):
        assert type(clone) is type(error) and clone.args == error.args
        assert clone.__dict__ == error.__dict__
    assert type(error).__module__ == "poolkeeper"


def test_error_tree() -> None:
    assert issubclass(PoolTimeout, TimeoutError) and issubclass(ConfigError, ValueError)
    assert issubclass(poolkeeper.QueryTimeout, TimeoutError)
    for cls in (
        PoolTimeout,
        poolkeeper.PoolClosed,
        TooManyWaiters,
        ConfigError,
        poolkeeper.QueryTimeout,
    ):
        assert issubclass(cls, poolkeeper.PoolError)
    assert issubclass(poolkeeper.ConnectionLeakWarning, poolkeeper.PoolWarning)


def test_importing_poolkeeper_imports_no_driver() -> None:
    import subprocess

    code = (
        "import sys, poolkeeper; "
        "bad = [m for m in ('psycopg', 'asyncpg', 'aiosqlite', 'sqlite3', 'psycopg2', "
        "'prometheus_client', 'rich', 'matplotlib', 'pymysql', 'aiomysql', "
        "'MySQLdb', 'aiopg', 'sqlalchemy', 'django') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
