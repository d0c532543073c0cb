"""What ``poolkeeper check``, ``bench`` and ``tune`` say when the connect fails.

Each command must show the driver's own error (not a bare ``PoolTimeout``) and
the fix that error calls for, against the real servers: a refused port, an
unknown PostgreSQL database, a wrong MariaDB password, an SQLite file that
cannot be opened. A URL naming an async-only driver picks asyncio, and a
missing driver package is named (issue 16, items 3, 7 and 8).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

pytestmark = [pytest.mark.integration]

SHORT = ["--duration", "0.2", "--no-progress", "-c", "2"]
GENERIC = "run with --debug"
REFUSED_FIX = "fix: start the server, or fix the host and port"


def run_cli(*args: str, hide: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a user does; ``hide`` makes that package look uninstalled."""
    code = "import sys\n"
    if hide:
        code += f"sys.modules[{hide!r}] = None\n"
    code += "from poolkeeper.cli.main import main\nsys.exit(main(sys.argv[1:]))\n"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def commands(url: str) -> dict[str, list[str]]:
    """The three commands pointed at ``url``, with the shortest run."""
    return {
        "check": ["check", url, "--round-trips", "1", "--timeout", "2"],
        "bench": ["bench", "--url", url, *SHORT],
        "tune": ["tune", "--url", url, *SHORT, "--sizes", "1"],
    }


def output(proc: subprocess.CompletedProcess[str]) -> str:
    return proc.stdout + proc.stderr


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def with_netloc(url: str, netloc: str, database: str | None = None) -> str:
    parts = urlsplit(url)
    path = parts.path if database is None else f"/{database}"
    return urlunsplit((parts.scheme, netloc, path, parts.query, ""))


@pytest.mark.parametrize("command", ["check", "bench", "tune"])
@pytest.mark.parametrize("scheme", ["postgresql", "mysql"])
def test_refused_port_names_the_error_and_the_fix(command: str, scheme: str) -> None:
    url = f"{scheme}://app:s3cret@127.0.0.1:{closed_port()}/test"
    proc = run_cli(*commands(url)[command])
    assert proc.returncode == 3, output(proc)
    assert "Connection refused" in output(proc)
    assert REFUSED_FIX in output(proc)
    assert "s3cret" not in output(proc)


@pytest.mark.postgres
@pytest.mark.parametrize("command", ["check", "bench", "tune"])
@pytest.mark.parametrize("driver", ["psycopg", "asyncpg", "psycopg2"])
def test_unknown_postgres_database(
    postgres_url: str, command: str, driver: str
) -> None:
    name = f"pk_missing_{uuid.uuid4().hex[:8]}"
    parts = urlsplit(postgres_url)
    url = urlunsplit((f"postgresql+{driver}", parts.netloc, f"/{name}", "", ""))
    proc = run_cli(*commands(url)[command])
    assert proc.returncode == 3, output(proc)
    assert f'database "{name}" does not exist' in output(proc)
    assert "fix: create the database (createdb NAME" in output(proc)
    assert "PoolTimeout" not in output(proc)


@pytest.fixture
def mariadb_user(mysql_url: str) -> Iterator[tuple[str, str]]:
    """A MariaDB account with a password, dropped afterwards: (user, password)."""
    import pymysql

    parts = urlsplit(mysql_url)
    admin = pymysql.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=parts.username or "root",
        password=parts.password or "",
        autocommit=True,
    )
    user, password = f"pk_cli_{uuid.uuid4().hex[:8]}", "right-pw-7"
    try:
        with admin.cursor() as cur:
            cur.execute(f"CREATE USER '{user}'@'%%' IDENTIFIED BY %s", (password,))
            cur.execute(f"GRANT ALL ON `{parts.path.lstrip('/')}`.* TO '{user}'@'%'")
        yield user, password
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP USER IF EXISTS '{user}'@'%'")
        admin.close()


@pytest.mark.mysql
@pytest.mark.parametrize("command", ["check", "bench", "tune"])
@pytest.mark.parametrize("driver", ["pymysql", "aiomysql"])
def test_mariadb_wrong_password(
    mysql_url: str, mariadb_user: tuple[str, str], command: str, driver: str
) -> None:
    user, password = mariadb_user
    parts = urlsplit(mysql_url)
    host = f"{parts.hostname or '127.0.0.1'}:{parts.port or 3306}"
    right = f"mysql+{driver}://{user}:{password}@{host}{parts.path}"
    assert run_cli("check", right, "--round-trips", "1").returncode == 0
    wrong = f"mysql+{driver}://{user}:wrong-pw-9@{host}{parts.path}"
    proc = run_cli(*commands(wrong)[command])
    assert proc.returncode == 3, output(proc)
    assert f"Access denied for user '{user}'" in output(proc)
    assert "fix: check the user and password in the URL" in output(proc)
    assert GENERIC not in output(proc)
    assert "wrong-pw-9" not in output(proc)


@pytest.mark.mysql
@pytest.mark.parametrize("command", ["check", "bench", "tune"])
def test_mariadb_unknown_database(mysql_url: str, command: str) -> None:
    name = f"pk_missing_{uuid.uuid4().hex[:8]}"
    url = with_netloc(mysql_url, urlsplit(mysql_url).netloc, name)
    proc = run_cli(*commands(url)[command])
    assert proc.returncode == 3, output(proc)
    assert f"Unknown database '{name}'" in output(proc)
    assert "fix: create the database (CREATE DATABASE name)" in output(proc)


@pytest.mark.sqlite
@pytest.mark.parametrize("command", ["check", "bench", "tune"])
def test_sqlite_unable_to_open(tmp_path: Path, command: str) -> None:
    # A path that is a directory: it exists, so check gets past its file
    # step, and SQLite cannot open it as a database.
    proc = run_cli(*commands(f"sqlite:///{tmp_path}")[command])
    assert proc.returncode == 3, output(proc)
    assert "unable to open database file" in output(proc)
    assert "fix: SQLite cannot open the file" in output(proc)
    if command != "check":
        missing = f"sqlite:///{tmp_path}/no/such/dir/app.db"
        proc = run_cli(*commands(missing)[command])
        assert proc.returncode == 3, output(proc)
        assert "fix: SQLite cannot open the file" in output(proc)


@pytest.mark.postgres
def test_a_pool_timeout_is_reported_as_its_driver_error(postgres_url: str) -> None:
    # Whether the pool raises PoolTimeout chained to the connect error or the
    # connect error itself, the CLI reports the driver's error and its fix.
    import poolkeeper
    from poolkeeper.cli._common import connect_failed, resolve_target

    url = with_netloc(postgres_url, urlsplit(postgres_url).netloc, "pk_no_such_db")
    target = resolve_target(url, use_async=False)
    with (
        poolkeeper.Pool(url, min_size=0, max_size=1, timeout=0.5) as pool,
        pytest.raises(Exception) as info,  # noqa: PT011 - either kind is fine
        pool.connection(),
    ):
        pass
    error = connect_failed(target, info.value)
    assert 'database "pk_no_such_db" does not exist' in str(error)
    assert "fix: create the database" in str(error)
    assert error.code == 3


@pytest.mark.parametrize(
    ("command", "url", "package"),
    [
        ("bench", "mysql+aiomysql://root@127.0.0.1/test", "aiomysql"),
        ("tune", "postgresql+aiopg://postgres@127.0.0.1/test", "aiopg"),
        ("check", "postgresql+asyncpg://postgres@127.0.0.1/test", "asyncpg"),
        ("bench", "postgresql+psycopg2://postgres@127.0.0.1/test", "psycopg2"),
    ],
)
def test_a_missing_driver_is_named_not_called_async_only(
    command: str, url: str, package: str
) -> None:
    proc = run_cli(*commands(url)[command], hide=package)
    assert proc.returncode == 2, output(proc)
    assert f"needs the {package!r} package" in output(proc)
    assert "pip install" in output(proc)
    assert "async-only" not in output(proc)
    assert "dialect[+driver]://" not in output(proc)  # no URL-format "fix"


def test_async_flag_on_a_sync_only_driver_says_so() -> None:
    proc = run_cli("bench", "--url", "sqlite:///x.db", "--async", *SHORT)
    assert proc.returncode == 2
    assert "sync-only: drop --async" in proc.stderr


@pytest.mark.postgres
@pytest.mark.parametrize("command", ["check", "bench", "tune"])
def test_aiopg_url_runs_without_async_flag(postgres_url: str, command: str) -> None:
    parts = urlsplit(postgres_url)
    url = urlunsplit(("postgresql+aiopg", parts.netloc, parts.path, "", ""))
    proc = run_cli(*commands(url)[command])
    assert proc.returncode == 0, output(proc)
    assert "aiopg" in proc.stdout


@pytest.mark.mysql
def test_aiomysql_check_times_round_trips(mysql_url: str) -> None:
    parts = urlsplit(mysql_url)
    url = urlunsplit(("mysql+aiomysql", parts.netloc, parts.path, "", ""))
    proc = run_cli("check", url, "--round-trips", "2")
    assert proc.returncode == 0, output(proc)
    assert "[ ok ] round trip" in proc.stdout
