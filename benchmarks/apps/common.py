"""What both apps share: settings from the environment and the statements."""

from __future__ import annotations

import os
from typing import Any

#: The pool to serve with (see each app's docstring for the names).
POOL = os.environ.get("BENCH_POOL", "pk-asyncpg")
DSN = os.environ.get("BENCH_DSN", "postgresql://postgres@127.0.0.1:5432/test")
#: ``application_name`` of every server session, counted by the runner.
APPNAME = os.environ.get("BENCH_APPNAME", f"bench-{POOL}")
SIZE = int(os.environ.get("BENCH_POOL_SIZE", "20"))

#: The two statements, in psycopg's placeholder style (asyncpg's uses $1).
PG_FIRST = "SELECT %s::int + 1"
PG_SECOND = "SELECT %s::int * 2"


def sqlalchemy_statements() -> tuple[Any, Any]:
    """The same two statements as SQLAlchemy ``text()`` constructs."""
    from sqlalchemy import text

    return text("SELECT CAST(:n AS int) + 1"), text("SELECT CAST(:n AS int) * 2")
