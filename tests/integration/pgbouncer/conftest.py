"""PgBouncer tests: a session-wide PgBouncer in transaction mode (tests/support/pgbouncer.py)."""

from __future__ import annotations

from tests.support.pgbouncer import pgbouncer

__all__ = ["pgbouncer"]
