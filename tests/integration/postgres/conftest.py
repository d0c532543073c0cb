"""Helpers for tests against the real PostgreSQL server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest


@pytest.fixture
def dsn(postgres_url: str) -> str:
    """The server URL as libpq and asyncpg take it (no ``+driver`` part)."""
    parts = urlsplit(postgres_url)
    return urlunsplit(parts._replace(scheme=parts.scheme.split("+")[0]))


@pytest.fixture
def app_name() -> str:
    """A unique application_name, so server-side counts see only this test's pool."""
    return f"pk-test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def admin(postgres_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """An autocommit connection outside any pool, for inspecting and killing backends."""
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        yield conn


def backends(admin: psycopg.Connection[tuple[object, ...]], app: str) -> int:
    """Count the server sessions opened under ``app``."""
    row = admin.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (app,)
    ).fetchone()
    assert row is not None
    count = row[0]
    assert isinstance(count, int)
    return count


def terminate(admin: psycopg.Connection[tuple[object, ...]], app: str) -> int:
    """Kill every session opened under ``app``; return how many."""
    rows = admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
        (app,),
    ).fetchall()
    return len(rows)
