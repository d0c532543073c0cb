"""URL -> connect arguments, per driver adapter (no server needed)."""

from __future__ import annotations

import pytest

from poolkeeper import ConfigError
from poolkeeper._config import parse_url, scrub, secrets_of
from poolkeeper.drivers import CONNECTION_MODULES, SCHEMES, driver_for_url

KEEPALIVE_DEFAULTS = {
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
}


def kwargs_for(module: str, url: str, **connect_args: object) -> dict[str, object]:
    mod = pytest.importorskip(f"poolkeeper.drivers.{module}")
    result: dict[str, object] = mod.url_to_kwargs(parse_url(url), connect_args)
    return result


# --- libpq drivers: psycopg, psycopg2, aiopg ---------------------------------

LIBPQ = ["psycopg", "psycopg2", "aiopg"]


@pytest.mark.parametrize("module", LIBPQ)
def test_libpq_parts_and_defaults(module: str) -> None:
    kwargs = kwargs_for(module, "postgresql://u:p%40ss%2Fw%3Ard@db.example:6543/app")
    assert kwargs == {
        "host": "db.example",
        "port": 6543,
        "user": "u",
        "password": "p@ss/w:rd",
        "dbname": "app",
        "connect_timeout": "10",
        **KEEPALIVE_DEFAULTS,
    }


@pytest.mark.parametrize("module", LIBPQ)
def test_libpq_unix_socket_and_query_params(module: str) -> None:
    kwargs = kwargs_for(
        module, "postgresql://u@/app?host=/var/run/postgresql&application_name=x"
    )
    assert kwargs["host"] == "/var/run/postgresql"
    assert kwargs["application_name"] == "x"
    encoded = kwargs_for(module, "postgresql://u@%2Fvar%2Frun%2Fpostgresql/app")
    assert encoded["host"] == "/var/run/postgresql"


@pytest.mark.parametrize("module", LIBPQ)
def test_libpq_user_settings_win_over_defaults(module: str) -> None:
    kwargs = kwargs_for(
        module,
        "postgresql://u@h/app?keepalives_idle=120&connect_timeout=3",
        keepalives="0",
        host="other",
    )
    assert kwargs["keepalives_idle"] == "120"
    assert kwargs["connect_timeout"] == "3"
    assert kwargs["keepalives"] == "0"
    assert kwargs["host"] == "other"


def test_libpq_dsn_in_connect_args_is_respected() -> None:
    kwargs = kwargs_for("psycopg2", "postgresql://u@h/app", dsn="keepalives_idle=99")
    assert "keepalives_idle" not in kwargs
    assert kwargs["keepalives_interval"] == "10"


@pytest.mark.parametrize("module", LIBPQ)
def test_libpq_unknown_parameter_is_config_error(module: str) -> None:
    with pytest.raises(ConfigError, match="libpq") as info:
        kwargs_for(module, "postgresql://u@h/app?no_such_option=1")
    assert "LIBPQ-PARAMKEYWORDS" in str(info.value)


def test_aiopg_timeout_is_aiopg_own() -> None:
    kwargs = kwargs_for("aiopg", "postgresql://u@h/app?timeout=5.5")
    assert kwargs["timeout"] == 5.5
    with pytest.raises(ConfigError, match="timeout"):
        kwargs_for("aiopg", "postgresql://u@h/app?timeout=soon")


# --- asyncpg -------------------------------------------------------------------


def test_asyncpg_typed_params_dsn_rest_and_defaults() -> None:
    kwargs = kwargs_for(
        "asyncpg",
        "postgresql://u:s%3Ecret@h:5433/app?command_timeout=2.5&statement_cache_size=0"
        "&sslmode=disable&application_name=x",
    )
    assert kwargs["password"] == "s>cret"
    assert kwargs["port"] == 5433
    assert kwargs["database"] == "app"
    assert kwargs["command_timeout"] == 2.5
    assert kwargs["statement_cache_size"] == 0
    assert kwargs["timeout"] == 10
    assert kwargs["dsn"] == "postgresql://?sslmode=disable&application_name=x"


def test_asyncpg_connect_timeout_alias_and_connect_args_win() -> None:
    assert kwargs_for("asyncpg", "postgresql://h/db?connect_timeout=3")["timeout"] == 3
    assert kwargs_for("asyncpg", "postgresql://h/db", timeout=7)["timeout"] == 7


def test_asyncpg_bad_type_is_config_error() -> None:
    with pytest.raises(ConfigError, match="statement_cache_size"):
        kwargs_for("asyncpg", "postgresql://h/db?statement_cache_size=lots")


def test_asyncpg_unix_socket_via_query() -> None:
    kwargs = kwargs_for("asyncpg", "postgresql://u@/db?host=/var/run/postgresql")
    assert "host" not in kwargs
    assert kwargs["dsn"] == "postgresql://?host=%2Fvar%2Frun%2Fpostgresql"


# --- MySQL drivers ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "db_key"),
    [("pymysql", "database"), ("aiomysql", "db"), ("mysqldb", "database")],
)
def test_mysql_parts_types_and_defaults(module: str, db_key: str) -> None:
    kwargs = kwargs_for(
        module,
        "mysql://root:p%26w%3D@db:3307/app?charset=utf8mb4&autocommit=true"
        "&connect_timeout=5&local_infile=0",
    )
    assert kwargs == {
        "host": "db",
        "port": 3307,
        "user": "root",
        "password": "p&w=",
        db_key: "app",
        "charset": "utf8mb4",
        "autocommit": True,
        "connect_timeout": 5,
        "local_infile": False,
    }


@pytest.mark.parametrize("module", ["pymysql", "aiomysql", "mysqldb"])
def test_mysql_default_timeout_and_keepalive_params_consumed(module: str) -> None:
    kwargs = kwargs_for(module, "mysql://root@db/app?keepalives_idle=60")
    assert kwargs["connect_timeout"] == 10
    assert not any(key.startswith("keepalives") for key in kwargs)


@pytest.mark.parametrize("module", ["pymysql", "aiomysql", "mysqldb"])
def test_mysql_unix_socket(module: str) -> None:
    kwargs = kwargs_for(module, "mysql://root@/app?unix_socket=/run/mysqld/mysqld.sock")
    assert kwargs["unix_socket"] == "/run/mysqld/mysqld.sock"
    encoded = kwargs_for(module, "mysql://root@%2Frun%2Fmysqld%2Fmysqld.sock/app")
    assert encoded["unix_socket"] == "/run/mysqld/mysqld.sock"
    assert "host" not in encoded


@pytest.mark.parametrize("module", ["pymysql", "aiomysql", "mysqldb"])
def test_mysql_connect_args_win(module: str) -> None:
    kwargs = kwargs_for(module, "mysql://root@db/app?charset=latin1", charset="utf8mb4")
    assert kwargs["charset"] == "utf8mb4"


@pytest.mark.parametrize("module", ["pymysql", "aiomysql", "mysqldb"])
def test_mysql_unsupported_parameter_lists_supported(module: str) -> None:
    with pytest.raises(ConfigError, match="sslmode") as info:
        kwargs_for(module, "mysql://root@db/app?sslmode=require")
    assert "supported:" in str(info.value)
    assert "unix_socket" in str(info.value)


def test_mysql_bad_value_is_config_error() -> None:
    with pytest.raises(ConfigError, match="autocommit"):
        kwargs_for("pymysql", "mysql://root@db/app?autocommit=maybe")


def test_pymysql_timeouts_are_numbers() -> None:
    kwargs = kwargs_for(
        "pymysql", "mysql://root@db/app?read_timeout=1.5&write_timeout=2"
    )
    assert kwargs["read_timeout"] == 1.5
    assert kwargs["write_timeout"] == 2


def test_mysqldb_connect_timeout_is_whole_seconds() -> None:
    assert (
        kwargs_for("mysqldb", "mysql://r@db/a?connect_timeout=0.2")["connect_timeout"]
        == 1
    )


# --- registry --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "is_async", "package", "cls"),
    [
        ("postgresql+psycopg2://u@h/db", False, "psycopg2", "Psycopg2Driver"),
        ("postgresql+aiopg://u@h/db", True, "aiopg", "AiopgDriver"),
        ("mysql://u@h/db", False, "pymysql", "PymysqlDriver"),
        ("mariadb://u@h/db", False, "pymysql", "PymysqlDriver"),
        ("mysql+pymysql://u@h/db", False, "pymysql", "PymysqlDriver"),
        ("mysql+aiomysql://u@h/db", True, "aiomysql", "AiomysqlDriver"),
        ("mysql+mysqldb://u@h/db", False, "MySQLdb", "MysqldbDriver"),
    ],
)
def test_scheme_picks_adapter(url: str, is_async: bool, package: str, cls: str) -> None:
    pytest.importorskip(package)
    assert type(driver_for_url(url, {}, is_async=is_async)).__name__ == cls


@pytest.mark.parametrize(
    ("url", "is_async"),
    [
        ("postgresql+psycopg2://u@h/db", True),
        ("postgresql+aiopg://u@h/db", False),
        ("mysql+pymysql://u@h/db", True),
        ("mysql+aiomysql://u@h/db", False),
        ("mysql+mysqldb://u@h/db", True),
    ],
)
def test_wrong_pool_kind_lists_alternatives(url: str, is_async: bool) -> None:
    with pytest.raises(ConfigError, match=r"use (Async)?Pool, or pick another driver"):
        driver_for_url(url, {}, is_async=is_async)


def test_unknown_combination_lists_schemes() -> None:
    with pytest.raises(ConfigError, match="supported schemes") as info:
        driver_for_url("postgresql+pymysql://u@h/db", {}, is_async=False)
    assert "mysql+aiomysql" in str(info.value)
    assert "postgresql+psycopg2" in str(info.value)


def test_connection_modules_cover_new_drivers() -> None:
    for module, scheme in {
        "psycopg2": "postgresql+psycopg2",
        "aiopg": "postgresql+aiopg",
        "pymysql": "mysql+pymysql",
        "aiomysql": "mysql+aiomysql",
        "MySQLdb": "mysql+mysqldb",
    }.items():
        assert CONNECTION_MODULES[module] == scheme
        assert scheme in SCHEMES


@pytest.mark.parametrize(
    ("connect_args", "expected"),
    [
        ({"password": "pw1"}, {"pw1"}),
        ({"dsn": "host=127.0.0.1 password=pw2 dbname=test"}, {"pw2"}),
        ({"dsn": "host=h PASSWORD = pw3"}, {"pw3"}),
        ({"conninfo": r"password='a b\'c' host=h"}, {"a b'c"}),
        ({"dsn": "postgresql://u:p%40ss@127.0.0.1/test"}, {"p%40ss", "p@ss"}),
        ({"dsn": "postgresql://u@h/db?password=pw4&sslmode=off"}, {"pw4"}),
        ({"dsn": "host=h dbname=test", "application_name": "x"}, set()),
    ],
)
def test_secrets_of_finds_passwords_in_passed_through_connection_strings(
    connect_args: dict[str, str], expected: set[str]
) -> None:
    assert set(secrets_of(None, connect_args)) == expected
    for secret in expected:
        assert secret not in scrub(
            f"driver said: {connect_args}", secrets_of(None, connect_args)
        )


def test_a_subclass_of_a_driver_connection_gets_that_drivers_adapter() -> None:
    """A connection class deriving from a driver's (asyncpg's
    ``connection_class=``, sqlite3's ``factory=``) is that driver's
    connection, whatever module the subclass is defined in."""
    import sqlite3

    from poolkeeper.drivers import ops_for_connection
    from poolkeeper.drivers.sqlite3 import Sqlite3Driver

    class MyConnection(sqlite3.Connection):
        pass

    conn = sqlite3.connect(":memory:", factory=MyConnection)
    try:
        assert type(conn).__module__ == __name__
        assert ops_for_connection(conn, is_async=False) is Sqlite3Driver
    finally:
        conn.close()
