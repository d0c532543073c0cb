"""Shared test configuration: database URLs, the --require-db switch, markers, leak checks.

Server URLs come from ``--postgres-url`` / ``--mysql-url`` or the
``POOLKEEPER_TEST_POSTGRES_URL`` / ``POOLKEEPER_TEST_MYSQL_URL`` environment
variables, defaulting to the local servers. An unreachable server skips its
tests with the command that starts it, except with ``CI=true`` or
``--require-db``, where it fails the run: a run must not pass while quietly
testing nothing.
"""

from __future__ import annotations

import importlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_MYSQL_URL = "mysql://root@127.0.0.1:3306/test"
START_HINTS = {
    "postgres": "pg_ctlcluster --skip-systemctl-redirect 15 main start",
    "mysql": "start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd",
}
_HERE = Path(__file__).parent


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("poolkeeper")
    group.addoption(
        "--postgres-url", default=None, help="PostgreSQL URL for integration tests"
    )
    group.addoption(
        "--mysql-url", default=None, help="MariaDB/MySQL URL for integration tests"
    )
    group.addoption(
        "--require-db",
        action="store_true",
        default=False,
        help="fail (instead of skip) when a database server is unreachable; implied by CI=true",
    )


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    for item in items:
        parts = Path(str(item.fspath)).relative_to(_HERE).parts
        if parts[0] == "integration":
            item.add_marker(pytest.mark.integration)
            if len(parts) > 2 and parts[1] in (
                "postgres",
                "mysql",
                "sqlite",
                "pgbouncer",
            ):
                item.add_marker(getattr(pytest.mark, parts[1]))


def require_db(config: pytest.Config) -> bool:
    """True when a missing server must fail the run."""
    return (
        bool(config.getoption("--require-db"))
        or os.environ.get("CI", "").lower() == "true"
    )


def import_driver(config: pytest.Config, package: str) -> Any:
    """Import a driver package; skip if it is missing, fail with ``CI=true``.

    The test extras install every driver, so in CI a missing one means the
    run would pass while testing less than it claims.
    """
    try:
        return importlib.import_module(package)
    except ImportError as exc:
        message = f"driver package {package!r} is not installed ({exc})"
        if require_db(config):
            pytest.fail(message + "; install the test extras", pytrace=False)
        pytest.skip(message)


def _reachable(url: str) -> str | None:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port
    try:
        with socket.create_connection((host, port or 0), timeout=2.0):
            return None
    except OSError as exc:
        return f"{host}:{port}: {exc}"


#: Server kind -> (command line option, environment variable, default URL).
_URL_SOURCES = {
    "postgres": (
        "--postgres-url",
        "POOLKEEPER_TEST_POSTGRES_URL",
        DEFAULT_POSTGRES_URL,
    ),
    "mysql": ("--mysql-url", "POOLKEEPER_TEST_MYSQL_URL", DEFAULT_MYSQL_URL),
}


def database_url(config: pytest.Config, kind: str) -> str:
    """The configured URL of the ``kind`` server, without checking it is up."""
    option, env, default = _URL_SOURCES[kind]
    return str(config.getoption(option) or os.environ.get(env) or default)


def _server_url(config: pytest.Config, kind: str) -> str:
    url = database_url(config, kind)
    problem = _reachable(url)
    if problem is not None:
        message = (
            f"{kind} server unreachable ({problem}); start it with: {START_HINTS[kind]}"
        )
        if require_db(config):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return url


@pytest.fixture(scope="session")
def postgres_url(pytestconfig: pytest.Config) -> str:
    """URL of the PostgreSQL test server (skips or fails when it is down)."""
    return _server_url(pytestconfig, "postgres")


@pytest.fixture(scope="session")
def mysql_url(pytestconfig: pytest.Config) -> str:
    """URL of the MariaDB test server (skips or fails when it is down)."""
    return _server_url(pytestconfig, "mysql")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _pool_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("poolkeeper-")]


@pytest.fixture(scope="session", autouse=True)
def _no_leaked_pool_threads() -> Iterator[None]:
    """Fail the run if pool background threads outlive the tests (an unclosed pool)."""
    yield
    deadline = time.monotonic() + 5.0
    while _pool_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    leaked = _pool_threads()
    assert not leaked, f"pool threads still running after the tests: {leaked}"
