"""A tiny real Django project on the poolkeeper backends, against PostgreSQL and MariaDB.

The project (``djangoapp``: one model, one migration, four views taking the
database alias from the URL) runs in a throwaway test database created by
Django's own test machinery, so its migrations really run. Each test runs
once per backend: alias ``default`` on ``poolkeeper.django.postgresql`` and
alias ``mysql`` on ``poolkeeper.django.mysql`` (Django settings are
configured once per process, so both aliases are always declared; a backend
whose server is down skips, or fails with ``CI=true``). Views are called
through Django's test client and through Django's real WSGI and ASGI
handlers (driven by httpx's transports). The test client keeps the
connection between requests on purpose (it disconnects
``close_old_connections`` so test transactions survive); the real handlers
fire ``request_finished`` like a server does, and there the backend must
hand the connection back to the pool at the end of every request.
"""

from __future__ import annotations

import importlib
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
import pytest

pytest.importorskip("django")

import django  # type: ignore[import-untyped,unused-ignore]
from django.conf import settings  # type: ignore[import-untyped,unused-ignore]
from django.core.exceptions import ImproperlyConfigured  # type: ignore[import-untyped,unused-ignore]
from django.core.handlers.asgi import ASGIHandler  # type: ignore[import-untyped,unused-ignore]
from django.core.handlers.wsgi import WSGIHandler  # type: ignore[import-untyped,unused-ignore]
from django.db import connections  # type: ignore[import-untyped,unused-ignore]
from django.db.utils import load_backend  # type: ignore[import-untyped,unused-ignore]
from django.test import Client  # type: ignore[import-untyped,unused-ignore]
from django.test.utils import setup_test_environment, teardown_test_environment  # type: ignore[import-untyped,unused-ignore]

import poolkeeper
from tests.conftest import database_url, import_driver
from tests.integration.frameworks.conftest import terminate
from tests.integration.frameworks.django_db import database

pytestmark = [pytest.mark.integration]

APP = f"pk-django-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Backend:
    """One backend under test: its alias, server fixture and driver package."""

    vendor: str
    alias: str
    url_fixture: str
    driver: str

    @property
    def wrapper(self) -> type[Any]:
        """poolkeeper's DatabaseWrapper (imported late: Django's MySQL backend
        refuses to import without mysqlclient, which only skips these tests)."""
        module = importlib.import_module(f"poolkeeper.django.{self.vendor}.base")
        wrapper: type[Any] = module.DatabaseWrapper
        return wrapper


BACKENDS = {
    "postgresql": Backend("postgresql", "default", "postgres_url", "psycopg"),
    "mysql": Backend("mysql", "mysql", "mysql_url", "MySQLdb"),
}


def _configure(config: pytest.Config) -> None:
    if settings.configured:
        return
    pool = {"min_size": 1, "max_size": 2, "timeout": 10}
    settings.configure(
        SECRET_KEY="poolkeeper-tests",
        ALLOWED_HOSTS=["testserver"],
        INSTALLED_APPS=["tests.integration.frameworks.djangoapp"],
        ROOT_URLCONF="tests.integration.frameworks.djangoapp.urls",
        MIDDLEWARE=[],
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
        DATABASES={
            "default": database(
                "postgresql",
                database_url(config, "postgres"),
                f"test_pk_{uuid.uuid4().hex[:10]}",
                CONN_HEALTH_CHECKS=True,
                OPTIONS={"application_name": APP, "pool": pool},
            ),
            "mysql": database(
                "mysql",
                database_url(config, "mysql"),
                f"test_pk_{uuid.uuid4().hex[:10]}",
                CONN_HEALTH_CHECKS=True,
                OPTIONS={"pool": pool},
            ),
        },
    )
    django.setup()


@dataclass
class Project:
    """The migrated test project on one backend."""

    backend: Backend
    url: str

    @property
    def alias(self) -> str:
        return self.backend.alias

    @property
    def connection(self) -> Any:
        return connections[self.alias]

    def pool(self) -> Any:
        return self.connection.pool

    def wrapper(self, alias: str, **pool: Any) -> Any:
        """A new wrapper of the test database under ``alias``, with ``pool`` settings."""
        base = self.connection.settings_dict
        options = {**base["OPTIONS"], "pool": pool}
        return self.backend.wrapper({**base, "OPTIONS": options}, alias=alias)

    def path(self, view: str) -> str:
        return f"/{self.alias}/{view}/"

    def kill_sessions(self) -> int:
        """Kill every server session of the test project; return how many."""
        if self.backend.vendor == "postgresql":
            import psycopg

            # The project's PostgreSQL sessions carry application_name=APP.
            with psycopg.connect(self.url, autocommit=True) as admin:
                return terminate(admin, APP)
        import MySQLdb  # type: ignore[import-untyped]

        parts = urlsplit(self.url)
        admin = MySQLdb.connect(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 3306,
            user=unquote(parts.username or ""),
            password=unquote(parts.password or ""),
        )
        try:
            cursor = admin.cursor()
            cursor.execute(
                "SELECT ID FROM information_schema.PROCESSLIST "
                "WHERE DB = %s AND ID <> CONNECTION_ID()",
                (self.connection.settings_dict["NAME"],),
            )
            ids = [row[0] for row in cursor.fetchall()]
            for session in ids:
                cursor.execute(f"KILL {int(session)}")
            return len(ids)
        finally:
            admin.close()


@pytest.fixture(
    scope="module",
    params=[
        pytest.param("postgresql", marks=pytest.mark.postgres),
        pytest.param("mysql", marks=pytest.mark.mysql),
    ],
)
def project(
    request: pytest.FixtureRequest, pytestconfig: pytest.Config
) -> Iterator[Project]:
    backend = BACKENDS[request.param]
    url = request.getfixturevalue(backend.url_fixture)
    import_driver(pytestconfig, backend.driver)
    _configure(pytestconfig)
    setup_test_environment()
    connection = connections[backend.alias]
    old_name = connection.creation.create_test_db(
        verbosity=0, autoclobber=True, serialize=False
    )
    # Migrations leave this thread's connection checked out: every test starts
    # with none lent (the in_use == 0 checks), whichever runs first.
    connection.close()
    try:
        yield Project(backend, url)
    finally:
        connections.close_all()
        connection.creation.destroy_test_db(old_name, verbosity=0)
        connection.close_pool()
        teardown_test_environment()


def test_migrations_ran_through_the_pool(project: Project) -> None:
    with project.connection.cursor() as cursor:
        cursor.execute(
            "SELECT app, name FROM django_migrations WHERE app = 'djangoapp'"
        )
        assert [tuple(row) for row in cursor.fetchall()] == [
            ("djangoapp", "0001_initial")
        ]
    project.connection.close()
    assert type(project.connection) is project.backend.wrapper
    assert project.pool().stats().in_use == 0


def test_views_through_the_test_client(project: Project) -> None:
    client = Client()
    assert client.post(project.path("notes"), {"text": "hello"}).status_code == 200
    assert "hello" in client.get(project.path("notes")).json()["notes"]
    project.connection.close()  # what request_finished does outside the test client
    assert project.pool().stats().in_use == 0


def test_wsgi_requests_return_connections_to_the_pool(project: Project) -> None:
    with httpx.Client(
        transport=httpx.WSGITransport(app=WSGIHandler()), base_url="http://testserver"
    ) as client:
        first = client.post(project.path("notes"), data={"text": "wsgi"})
        assert first.status_code == 200
        assert project.pool().stats().in_use == 0  # returned at request_finished
        second = client.get(project.path("notes"))
    assert "wsgi" in second.json()["notes"]
    # The pool lent the same server session to the next request.
    assert first.json()["backend_pid"] == second.json()["backend_pid"]
    stats = project.pool().stats()
    assert stats.in_use == 0
    assert stats.connections_created <= 2


def test_error_in_a_view_rolls_back_and_returns_the_connection(
    project: Project,
) -> None:
    client = Client(raise_request_exception=False)
    assert client.get(project.path("fail")).status_code == 500
    assert "rolled back" not in Client().get(project.path("notes")).json()["notes"]
    project.connection.close()
    assert project.pool().stats().in_use == 0


def test_threads_share_max_size_connections(project: Project) -> None:
    pids: set[int] = set()
    errors: list[BaseException] = []
    app = WSGIHandler()

    def work() -> None:
        try:
            with httpx.Client(
                transport=httpx.WSGITransport(app=app), base_url="http://testserver"
            ) as client:
                for _ in range(5):
                    response = client.get(project.path("sleepy"))
                    assert response.status_code == 200
                    pids.add(response.json()["pid"])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert 1 <= len(pids) <= 2  # max_size, for 8 threads and 40 requests
    assert project.pool().stats().in_use == 0


@pytest.mark.anyio
async def test_async_view_through_the_asgi_handler(project: Project) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=ASGIHandler()), base_url="http://testserver"
    ) as client:
        for _ in range(3):
            response = await client.get(project.path("count"))
            assert response.status_code == 200
            assert isinstance(response.json()["count"], int)
    assert project.pool().stats().in_use == 0


def test_health_check_replaces_a_killed_connection(project: Project) -> None:
    client = Client()
    assert client.get(project.path("notes")).status_code == 200
    project.connection.close()
    assert project.kill_sessions() >= 1  # kill the idle pooled session(s)
    # CONN_HEALTH_CHECKS is the pool's check hook: the dead connection is
    # discarded at checkout and the request never sees it.
    assert client.get(project.path("notes")).status_code == 200
    project.connection.close()


def test_conn_max_age_and_bad_options_are_refused(project: Project) -> None:
    base = project.connection.settings_dict
    wrapper = project.backend.wrapper
    persistent = wrapper({**base, "CONN_MAX_AGE": 60}, alias="pk-persistent")
    with pytest.raises(ImproperlyConfigured, match="CONN_MAX_AGE"):
        _ = persistent.pool
    bad = wrapper(
        {**base, "OPTIONS": {"pool": {"max_size": 0}}}, alias="pk-bad-options"
    )
    with pytest.raises(ImproperlyConfigured, match="max_size"):
        _ = bad.pool
    odd = wrapper({**base, "OPTIONS": {"pool": 5}}, alias="pk-odd-options")
    with pytest.raises(ImproperlyConfigured, match=r"OPTIONS\['pool'\] must be"):
        _ = odd.pool


def test_short_engine_alias(project: Project) -> None:
    short = f"poolkeeper.django.{project.backend.vendor}"
    assert load_backend(short).DatabaseWrapper is project.backend.wrapper


def test_exhausted_pool_times_out_and_reuses_a_returned_connection(
    project: Project,
) -> None:
    # Django's own PostgreSQL test_connect_pool, with poolkeeper's
    # PoolTimeout (Django's version expects psycopg_pool's class; see
    # django_suite_settings.py).
    wrapper = project.wrapper("pk-exhaust", min_size=0, max_size=2, timeout=1)
    opened: list[Any] = []

    def get_connection() -> Any:
        conn = wrapper.copy()  # same alias, so the same pool
        conn.connect()
        opened.append(conn)
        return conn

    def pid(conn: Any) -> int:
        with conn.cursor() as cursor:
            cursor.execute(
                "SELECT pg_backend_pid()"
                if conn.vendor == "postgresql"
                else "SELECT CONNECTION_ID()"
            )
            return int(cursor.fetchone()[0])

    try:
        first = get_connection()
        first_pid = pid(first)
        get_connection()
        with pytest.raises(poolkeeper.PoolTimeout, match="2/2"):
            get_connection()
        first.close()
        assert pid(get_connection()) == first_pid
    finally:
        for conn in opened:
            conn.close()
        wrapper.close_pool()


def _isolation_level(conn: Any) -> str:
    with conn.cursor() as cursor:
        if conn.vendor == "postgresql":
            # psycopg applies its isolation_level in each BEGIN: look inside one.
            conn.set_autocommit(False)
            try:
                cursor.execute("SHOW transaction_isolation")
                return str(cursor.fetchone()[0])
            finally:
                conn.rollback()
                conn.set_autocommit(True)
        # MariaDB < 11.1 only has tx_isolation; MySQL 8 only transaction_isolation.
        cursor.execute(
            "SHOW VARIABLES WHERE variable_name IN "
            "('transaction_isolation', 'tx_isolation')"
        )
        return str(cursor.fetchone()[1]).replace("-", " ").lower()


def test_each_wrapper_keeps_its_isolation_level_on_shared_connections(
    project: Project,
) -> None:
    # Wrappers of one alias share the pool, so one wrapper's OPTIONS
    # isolation_level must not leak into the next borrower's session.
    plain = project.wrapper("pk-isolation", min_size=0, max_size=1, timeout=5)
    strict = plain.copy()
    level: Any = "serializable"
    if project.backend.vendor == "postgresql":
        from psycopg import IsolationLevel

        level = IsolationLevel.SERIALIZABLE
    strict.settings_dict["OPTIONS"] = {
        **plain.settings_dict["OPTIONS"],
        "isolation_level": level,
    }
    try:
        strict.connect()
        assert _isolation_level(strict) == "serializable"
        strict.close()
        plain.connect()  # the same pooled session (max_size=1)
        assert _isolation_level(plain) == "read committed"
        plain.close()
        assert plain.pool.stats().connections_created == 1
    finally:
        strict.close()
        plain.close()
        plain.close_pool()
