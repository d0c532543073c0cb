"""A tiny real Django project on the poolkeeper backend, against PostgreSQL.

The project (``djangoapp``: one model, one migration, four views) runs in a
throwaway test database created by Django's own test machinery, so its
migrations really run. Views are called through Django's test client and
through Django's real WSGI and ASGI handlers (driven by httpx's transports).
The test client keeps the connection between requests on purpose (it
disconnects ``close_old_connections`` so test transactions survive); the real
handlers fire ``request_finished`` like a server does, and there the backend
must hand the connection back to the pool at the end of every request.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

pytest.importorskip("django")

import django  # type: ignore[import-untyped,unused-ignore]
from django.conf import settings  # type: ignore[import-untyped,unused-ignore]
from django.core.exceptions import ImproperlyConfigured  # type: ignore[import-untyped,unused-ignore]
from django.core.handlers.asgi import ASGIHandler  # type: ignore[import-untyped,unused-ignore]
from django.core.handlers.wsgi import WSGIHandler  # type: ignore[import-untyped,unused-ignore]
from django.db import connection, connections  # type: ignore[import-untyped,unused-ignore]
from django.db.utils import load_backend  # type: ignore[import-untyped,unused-ignore]
from django.test import Client  # type: ignore[import-untyped,unused-ignore]
from django.test.utils import setup_test_environment, teardown_test_environment  # type: ignore[import-untyped,unused-ignore]

from poolkeeper.integrations.django.postgresql.base import DatabaseWrapper
from tests.integration.frameworks.conftest import terminate

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

APP = f"pk-django-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def project(postgres_url: str) -> Iterator[None]:
    parts = urlsplit(postgres_url)
    if not settings.configured:
        settings.configure(
            SECRET_KEY="poolkeeper-tests",
            ALLOWED_HOSTS=["testserver"],
            INSTALLED_APPS=["tests.integration.frameworks.djangoapp"],
            ROOT_URLCONF="tests.integration.frameworks.djangoapp.urls",
            MIDDLEWARE=[],
            USE_TZ=True,
            DEFAULT_AUTO_FIELD="django.db.models.AutoField",
            DATABASES={
                "default": {
                    "ENGINE": "poolkeeper.integrations.django.postgresql",
                    "NAME": parts.path.lstrip("/") or "postgres",
                    "USER": parts.username or "",
                    "PASSWORD": parts.password or "",
                    "HOST": parts.hostname or "",
                    "PORT": str(parts.port or ""),
                    "CONN_MAX_AGE": 0,
                    "CONN_HEALTH_CHECKS": True,
                    "OPTIONS": {
                        "application_name": APP,
                        "pool": {"min_size": 1, "max_size": 2, "timeout": 10},
                    },
                    # Other test sessions may share the server.
                    "TEST": {"NAME": f"test_pk_{uuid.uuid4().hex[:10]}"},
                }
            },
        )
    django.setup()
    setup_test_environment()
    old_name = connection.creation.create_test_db(
        verbosity=0, autoclobber=True, serialize=False
    )
    try:
        yield
    finally:
        connections.close_all()
        connection.creation.destroy_test_db(old_name, verbosity=0)
        connection.close_pool()
        teardown_test_environment()


def _pool() -> Any:
    return connection.pool


def test_migrations_ran_through_the_pool(project: None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT app, name FROM django_migrations WHERE app = 'djangoapp'"
        )
        assert cursor.fetchall() == [("djangoapp", "0001_initial")]
    connection.close()
    assert type(connections["default"]) is DatabaseWrapper
    assert _pool().stats().in_use == 0


def test_views_through_the_test_client(project: None) -> None:
    client = Client()
    assert client.post("/notes/", {"text": "hello"}).status_code == 200
    assert "hello" in client.get("/notes/").json()["notes"]
    connection.close()  # what request_finished does outside the test client
    assert _pool().stats().in_use == 0


def test_wsgi_requests_return_connections_to_the_pool(project: None) -> None:
    with httpx.Client(
        transport=httpx.WSGITransport(app=WSGIHandler()), base_url="http://testserver"
    ) as client:
        first = client.post("/notes/", data={"text": "wsgi"})
        assert first.status_code == 200
        assert _pool().stats().in_use == 0  # returned at request_finished
        second = client.get("/notes/")
    assert "wsgi" in second.json()["notes"]
    # The pool lent the same server session to the next request.
    assert first.json()["backend_pid"] == second.json()["backend_pid"]
    stats = _pool().stats()
    assert stats.in_use == 0
    assert stats.connections_created <= 2


def test_error_in_a_view_rolls_back_and_returns_the_connection(
    project: None,
) -> None:
    client = Client(raise_request_exception=False)
    assert client.get("/fail/").status_code == 500
    assert "rolled back" not in Client().get("/notes/").json()["notes"]
    connection.close()
    assert _pool().stats().in_use == 0


def test_threads_share_max_size_connections(project: None) -> None:
    pids: set[int] = set()
    errors: list[BaseException] = []
    app = WSGIHandler()

    def work() -> None:
        try:
            with httpx.Client(
                transport=httpx.WSGITransport(app=app), base_url="http://testserver"
            ) as client:
                for _ in range(5):
                    response = client.get("/sleepy/")
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
    assert _pool().stats().in_use == 0


@pytest.mark.anyio
async def test_async_view_through_the_asgi_handler(project: None) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=ASGIHandler()), base_url="http://testserver"
    ) as client:
        for _ in range(3):
            response = await client.get("/count/")
            assert response.status_code == 200
            assert isinstance(response.json()["count"], int)
    assert _pool().stats().in_use == 0


def test_health_check_replaces_a_killed_connection(project: None, admin: Any) -> None:
    client = Client()
    assert client.get("/notes/").status_code == 200
    connection.close()
    assert terminate(admin, APP) >= 1  # kill the idle pooled session
    # CONN_HEALTH_CHECKS is the pool's check hook: the dead connection is
    # discarded at checkout and the request never sees it.
    assert client.get("/notes/").status_code == 200


def test_conn_max_age_and_bad_options_are_refused(project: None) -> None:
    base = connection.settings_dict
    persistent = DatabaseWrapper({**base, "CONN_MAX_AGE": 60}, alias="pk-persistent")
    with pytest.raises(ImproperlyConfigured, match="CONN_MAX_AGE"):
        _ = persistent.pool
    bad = DatabaseWrapper(
        {**base, "OPTIONS": {"pool": {"max_size": 0}}}, alias="pk-bad-options"
    )
    with pytest.raises(ImproperlyConfigured, match="max_size"):
        _ = bad.pool


def test_short_engine_alias(project: None) -> None:
    assert (
        load_backend("poolkeeper.django.postgresql").DatabaseWrapper is DatabaseWrapper
    )


def test_exhausted_pool_times_out_and_reuses_a_returned_connection(
    project: None,
) -> None:
    # Django's own test_connect_pool, with poolkeeper's PoolTimeout (Django's
    # version expects psycopg_pool's class; see django_suite_settings.py).
    import poolkeeper

    base = connection.settings_dict
    options = {**base["OPTIONS"], "pool": {"min_size": 0, "max_size": 2, "timeout": 1}}
    wrapper = DatabaseWrapper({**base, "OPTIONS": options}, alias="pk-exhaust")
    opened: list[Any] = []

    def get_connection() -> Any:
        conn = wrapper.copy()  # same alias, so the same pool
        conn.connect()
        opened.append(conn)
        return conn

    try:
        first = get_connection()
        pid = first.connection.info.backend_pid
        get_connection()
        with pytest.raises(poolkeeper.PoolTimeout, match="2/2"):
            get_connection()
        first.close()
        assert get_connection().connection.info.backend_pid == pid
    finally:
        for conn in opened:
            conn.close()
        wrapper.close_pool()
