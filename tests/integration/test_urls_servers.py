"""URL handling end to end: what a URL says is what the real server sees.

``tests/unit/test_urls.py`` checks the connect arguments each adapter builds;
here pools built from those URLs connect to the real PostgreSQL and MariaDB:
Unix sockets (``?host=`` / ``?unix_socket=`` and the percent-encoded host
form), a password full of URL delimiters checked by MariaDB's authentication,
query parameters reaching the session, ``connect_args`` winning over the
URL, and the URL's password never showing in the pool's errors or logs, even
where the server's own error text carries it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest

import poolkeeper
from tests.conftest import import_driver
from tests.integration.test_driver_contract import run
from tests.support.passwords import mysql_admin as admin_session

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

PG_DRIVERS = [
    ("psycopg", False, "psycopg"),
    ("psycopg", True, "psycopg"),
    ("psycopg2", False, "psycopg2"),
    ("asyncpg", True, "asyncpg"),
    ("aiopg", True, "aiopg"),
]
MY_DRIVERS = [
    ("pymysql", False, "pymysql"),
    ("aiomysql", True, "aiomysql"),
    ("mysqldb", False, "MySQLdb"),
]
PG_SOCKET_DIR = Path("/var/run/postgresql")
MY_SOCKET = Path("/run/mysqld/mysqld.sock")
#: A password distinctive enough to be found wherever it leaks.
SECRET = "S3cretPassw0rd"


def _ids(drivers: list[tuple[str, bool, str]]) -> list[str]:
    return [f"{d}-async" if a and d == "psycopg" else d for d, a, _ in drivers]


async def scalar(
    url: str, is_async: bool, sql: str, connect_args: dict[str, Any] | None = None
) -> Any:
    """Open a one-connection pool on ``url`` and return ``sql``'s first value."""
    options: dict[str, Any] = {"min_size": 1, "max_size": 1, "timeout": 5}
    if connect_args is not None:
        options["connect_args"] = connect_args
    if is_async:
        async with (
            poolkeeper.AsyncPool(url, **options) as apool,
            apool.connection() as conn,
        ):
            return (await run(conn, sql))[0][0]
    with poolkeeper.Pool(url, **options) as pool, pool.connection() as conn:
        return (await run(conn, sql))[0][0]


async def connect_errors(
    url: str, is_async: bool, connect_args: dict[str, Any]
) -> list[BaseException]:
    """Fail to connect on ``url`` twice: as a waiting caller (who gets the
    driver's own error), then with ``open(wait=True)`` (``PoolTimeout``);
    return both errors."""

    async def attempt(min_size: int) -> None:
        options: dict[str, Any] = {
            "min_size": min_size,
            "timeout": 5,
            "connect_args": connect_args,
        }
        if is_async:
            async with poolkeeper.AsyncPool(url, **options) as apool:
                await (apool.open(wait=True) if min_size else apool.acquire())
        else:
            with poolkeeper.Pool(url, **options) as pool:
                pool.open(wait=True) if min_size else pool.acquire()

    errors: list[BaseException] = []
    with pytest.raises(Exception) as caller:  # noqa: PT011 - any driver's type
        await attempt(0)
    # The waiting caller was failed at once, with the driver's own error.
    assert not isinstance(caller.value, poolkeeper.PoolError), repr(caller.value)
    errors.append(caller.value)
    with pytest.raises(poolkeeper.PoolTimeout) as info:
        await attempt(1)
    errors.append(info.value)
    return errors


async def use_with_failing_hooks(url: str, is_async: bool, sql: str) -> None:
    """Use one connection from a pool whose ``check`` hook fails once and
    whose ``reset`` hook always fails, both by running ``sql``."""
    checks: list[object] = []
    options: dict[str, Any] = {"min_size": 1, "max_size": 1, "timeout": 5}
    if is_async:

        async def acheck(conn: Any) -> None:
            checks.append(conn)
            if len(checks) == 1:
                await run(conn, sql)

        async def areset(conn: Any) -> None:
            await run(conn, sql)

        async with (
            poolkeeper.AsyncPool(url, check=acheck, reset=areset, **options) as apool,
            apool.connection() as conn,
        ):
            assert (await run(conn, "SELECT 1")) == [(1,)]
        return

    def execute(conn: Any) -> None:
        cursor = conn.cursor()
        try:
            cursor.execute(sql)
        finally:
            cursor.close()

    def check(conn: Any) -> None:
        checks.append(conn)
        if len(checks) == 1:
            execute(conn)

    with (
        poolkeeper.Pool(url, check=check, reset=execute, **options) as pool,
        pool.connection() as conn,
    ):
        assert (await run(conn, "SELECT 1")) == [(1,)]


def chained_texts(exc: BaseException) -> list[str]:
    """Return ``str`` and ``repr`` of ``exc`` and of every error chained to it
    (a connect error reaching a caller is masked, the driver's included)."""
    texts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        texts += [str(current), repr(current)]
        current = current.__cause__ or current.__context__
    return texts


def assert_secret_hidden(
    errors: list[BaseException], caplog: pytest.LogCaptureFixture
) -> None:
    texts = [text for error in errors for text in chained_texts(error)]
    texts += [caplog.text, *(record.getMessage() for record in caplog.records)]
    for text in texts:
        assert SECRET not in text, text


# -- PostgreSQL ------------------------------------------------------------------


@pytest.fixture(params=PG_DRIVERS, ids=_ids(PG_DRIVERS))
def pg(request: pytest.FixtureRequest, postgres_url: str) -> tuple[str, bool, Any]:
    """(driver, is_async, server URL parts) for one PostgreSQL driver."""
    driver, is_async, package = request.param
    request.node.add_marker(pytest.mark.postgres)
    import_driver(request.config, package)
    return driver, is_async, urlsplit(postgres_url)


@pytest.fixture
def pg_socket(pg: tuple[str, bool, Any]) -> None:
    """Skip unless the server's Unix socket is in the Debian default directory."""
    if not (PG_SOCKET_DIR / f".s.PGSQL.{pg[2].port or 5432}").exists():
        pytest.skip(f"no PostgreSQL socket in {PG_SOCKET_DIR}")


@pytest.mark.usefixtures("pg_socket")
async def test_postgres_unix_socket(pg: tuple[str, bool, Any]) -> None:
    driver, is_async, parts = pg
    user, db = parts.username or "postgres", parts.path.lstrip("/")
    encoded = quote(str(PG_SOCKET_DIR), safe="")
    for url in (
        f"postgresql+{driver}://{user}@/{db}?host={PG_SOCKET_DIR}",
        f"postgresql+{driver}://{user}@{encoded}/{db}",
    ):
        # inet_client_addr() is NULL for a Unix-socket session.
        assert await scalar(url, is_async, "SELECT inet_client_addr() IS NULL"), url


async def test_postgres_query_parameter_and_connect_args_precedence(
    pg: tuple[str, bool, Any],
) -> None:
    driver, is_async, parts = pg
    url = parts._replace(
        scheme=f"postgresql+{driver}",
        query="&".join(filter(None, [parts.query, "application_name=pk_from_url"])),
    ).geturl()
    sql = "SELECT current_setting('application_name')"
    assert await scalar(url, is_async, sql) == "pk_from_url"
    override: dict[str, Any] = (
        {"server_settings": {"application_name": "pk_from_args"}}
        if driver == "asyncpg"
        else {"application_name": "pk_from_args"}
    )
    assert await scalar(url, is_async, sql, override) == "pk_from_args"


@pytest.fixture
def pg_role(postgres_url: str) -> Iterator[str]:
    """A throwaway login role whose password is :data:`SECRET`."""
    psycopg = pytest.importorskip("psycopg")
    role = f"pk_url_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{SECRET}'")
        try:
            yield role
        finally:
            admin.execute(f"DROP ROLE IF EXISTS {role}")


async def test_postgres_connect_errors_never_show_the_password(
    pg: tuple[str, bool, Any], pg_role: str, caplog: pytest.LogCaptureFixture
) -> None:
    driver, is_async, parts = pg
    caplog.set_level(logging.DEBUG, logger="poolkeeper")
    host = f"{parts.hostname or '127.0.0.1'}:{parts.port or 5432}"
    url = f"postgresql+{driver}://{pg_role}:{SECRET}@{host}/no_such_db_xyz"
    errors = await connect_errors(url, is_async, {})
    assert_secret_hidden(errors, caplog)
    # The server quotes the database name it did not find: one that carries
    # the password stands for a driver error quoting its connection string.
    key = "database" if driver == "asyncpg" else "dbname"
    errors = await connect_errors(url, is_async, {key: f"no_such_db_{SECRET}"})
    assert "no_such_db_***" in str(errors[0])
    assert "no_such_db_***" in str(errors[1])
    assert_secret_hidden(errors, caplog)


async def test_postgres_failing_hooks_never_log_the_password(
    pg: tuple[str, bool, Any], pg_role: str, caplog: pytest.LogCaptureFixture
) -> None:
    driver, is_async, parts = pg
    caplog.set_level(logging.DEBUG, logger="poolkeeper")
    host = f"{parts.hostname or '127.0.0.1'}:{parts.port or 5432}"
    url = f"postgresql+{driver}://{pg_role}:{SECRET}@{host}/{parts.path.lstrip('/')}"
    # The server's error quotes the missing table's name, password included.
    await use_with_failing_hooks(url, is_async, f'SELECT * FROM "no_table_{SECRET}"')
    assert "validation failed" in caplog.text
    assert "resetting a returned connection failed" in caplog.text
    assert "no_table_***" in caplog.text
    assert_secret_hidden([], caplog)


# -- MariaDB ---------------------------------------------------------------------


@pytest.fixture(params=MY_DRIVERS, ids=_ids(MY_DRIVERS))
def my(request: pytest.FixtureRequest, mysql_url: str) -> tuple[str, bool, Any]:
    """(driver, is_async, server URL parts) for one MariaDB driver."""
    driver, is_async, package = request.param
    request.node.add_marker(pytest.mark.mysql)
    import_driver(request.config, package)
    return driver, is_async, urlsplit(mysql_url)


@pytest.fixture
def mysql_admin(mysql_url: str) -> Iterator[Any]:
    conn = admin_session(mysql_url)
    yield conn
    conn.close()


@pytest.fixture
def my_socket() -> None:
    """Skip unless the server's Unix socket is at the Debian default path."""
    if not MY_SOCKET.exists():
        pytest.skip(f"no MariaDB socket at {MY_SOCKET}")


@pytest.mark.usefixtures("my_socket")
async def test_mysql_unix_socket(my: tuple[str, bool, Any]) -> None:
    driver, is_async, parts = my
    user, db = parts.username or "root", parts.path.lstrip("/")
    encoded = quote(str(MY_SOCKET), safe="")
    sql = "SELECT HOST FROM information_schema.PROCESSLIST WHERE ID = CONNECTION_ID()"
    for url in (
        f"mysql+{driver}://{user}@/{db}?unix_socket={MY_SOCKET}",
        f"mysql+{driver}://{user}@{encoded}/{db}",
    ):
        # Over TCP the host column reads "127.0.0.1:<port>".
        assert await scalar(url, is_async, sql) == "localhost", url


async def test_mysql_percent_encoded_password_authenticates(
    my: tuple[str, bool, Any], mysql_admin: Any
) -> None:
    driver, is_async, parts = my
    user = f"pk_url_{uuid.uuid4().hex[:8]}"
    password = "p@ss:w/rd?#%&=+ ;"
    db = parts.path.lstrip("/")
    with mysql_admin.cursor() as cur:
        cur.execute(f"CREATE USER '{user}'@'%%' IDENTIFIED BY %s", (password,))
        cur.execute(f"GRANT ALL ON `{db}`.* TO '{user}'@'%'")
    try:
        host = f"{parts.hostname or '127.0.0.1'}:{parts.port or 3306}"
        url = f"mysql+{driver}://{user}:{quote(password, safe='')}@{host}/{db}"
        current = await scalar(url, is_async, "SELECT CURRENT_USER()")
        assert current == f"{user}@%"
        wrong = f"mysql+{driver}://{user}:{quote(password[:-1], safe='')}@{host}/{db}"
        with pytest.raises(Exception, match="Access denied") as info:
            await scalar(wrong, is_async, "SELECT 1")
        assert not isinstance(info.value, poolkeeper.PoolError)  # the driver's own
    finally:
        with mysql_admin.cursor() as cur:
            cur.execute(f"DROP USER IF EXISTS '{user}'@'%'")


async def test_mysql_query_parameter_and_connect_args_precedence(
    my: tuple[str, bool, Any],
) -> None:
    driver, is_async, parts = my
    url = parts._replace(
        scheme=f"mysql+{driver}", query="init_command=SET @pk_url = 7"
    ).geturl()
    assert await scalar(url, is_async, "SELECT @pk_url") == 7
    override = {"init_command": "SET @pk_url = 8"}
    assert await scalar(url, is_async, "SELECT @pk_url", override) == 8


@pytest.fixture
def my_user(my: tuple[str, bool, Any], mysql_admin: Any) -> Iterator[str]:
    """A throwaway user whose password is :data:`SECRET`, with rights on the
    test database only."""
    user = f"pk_url_{uuid.uuid4().hex[:8]}"
    db = my[2].path.lstrip("/")
    with mysql_admin.cursor() as cur:
        cur.execute(f"CREATE USER '{user}'@'%%' IDENTIFIED BY %s", (SECRET,))
        cur.execute(f"GRANT ALL ON `{db}`.* TO '{user}'@'%'")
    try:
        yield user
    finally:
        with mysql_admin.cursor() as cur:
            cur.execute(f"DROP USER IF EXISTS '{user}'@'%'")


async def test_mysql_connect_errors_never_show_the_password(
    my: tuple[str, bool, Any], my_user: str, caplog: pytest.LogCaptureFixture
) -> None:
    driver, is_async, parts = my
    caplog.set_level(logging.DEBUG, logger="poolkeeper")
    host = f"{parts.hostname or '127.0.0.1'}:{parts.port or 3306}"
    wrong = f"mysql+{driver}://root:{SECRET}@{host}/{parts.path.lstrip('/')}"
    errors = await connect_errors(wrong, is_async, {})
    assert "Access denied" in str(errors[0])
    assert_secret_hidden(errors, caplog)
    # The server quotes the database the user may not use: one that carries
    # the password stands for a driver error quoting its connection string.
    url = f"mysql+{driver}://{my_user}:{SECRET}@{host}"
    key = "db" if driver == "aiomysql" else "database"
    errors = await connect_errors(url, is_async, {key: f"no_db_{SECRET}"})
    assert "no_db_***" in str(errors[0])
    assert "no_db_***" in str(errors[1])
    assert_secret_hidden(errors, caplog)


async def test_mysql_failing_hooks_never_log_the_password(
    my: tuple[str, bool, Any], my_user: str, caplog: pytest.LogCaptureFixture
) -> None:
    driver, is_async, parts = my
    caplog.set_level(logging.DEBUG, logger="poolkeeper")
    host = f"{parts.hostname or '127.0.0.1'}:{parts.port or 3306}"
    url = f"mysql+{driver}://{my_user}:{SECRET}@{host}/{parts.path.lstrip('/')}"
    # The server's error quotes the missing table's name, password included.
    await use_with_failing_hooks(url, is_async, f"SELECT * FROM `no_table_{SECRET}`")
    assert "validation failed" in caplog.text
    assert "resetting a returned connection failed" in caplog.text
    assert "no_table_***" in caplog.text
    assert_secret_hidden([], caplog)
