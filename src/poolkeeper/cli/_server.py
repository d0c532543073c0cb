"""Small read-only queries against the server, through poolkeeper's driver adapters."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Sequence
from typing import Any

from poolkeeper.cli._common import Target, connect_failed


def fetch_all(target: Target, queries: Sequence[str]) -> list[list[tuple[Any, ...]]]:
    """Open one connection, run each query, and return the rows of each.

    A query that fails yields an empty list (and the transaction is rolled
    back), so optional facts such as a setting missing on an older server do
    not stop the caller.

    Raises:
        CliError: The connection cannot be opened (exit code 3).
    """
    from poolkeeper.drivers import driver_for_url

    driver: Any = driver_for_url(target.url, {}, is_async=target.is_async)
    if target.is_async:
        return asyncio.run(_fetch_async(target, driver, queries))
    try:
        conn = driver.connect()
    except Exception as exc:
        raise connect_failed(target, exc) from exc
    results: list[list[tuple[Any, ...]]] = []
    try:
        for query in queries:
            cursor = conn.cursor()
            try:
                cursor.execute(query)
                results.append([tuple(row) for row in cursor.fetchall()])
            except Exception:
                results.append([])
                driver.rollback(conn)
            finally:
                cursor.close()
        driver.rollback(conn)
    finally:
        driver.close(conn)
    return results


async def _fetch_async(
    target: Target, driver: Any, queries: Sequence[str]
) -> list[list[tuple[Any, ...]]]:
    try:
        conn = await driver.connect()
    except Exception as exc:
        raise connect_failed(target, exc) from exc
    results: list[list[tuple[Any, ...]]] = []
    try:
        for query in queries:
            try:
                results.append(await _fetch_one(driver.name, conn, query))
            except Exception:
                results.append([])
                if driver.is_broken(conn):
                    raise
                await driver.rollback(conn)
    finally:
        await driver.close(conn)
    return results


async def _fetch_one(driver_name: str, conn: Any, query: str) -> list[tuple[Any, ...]]:
    if driver_name == "asyncpg":
        return [tuple(row) for row in await conn.fetch(query)]
    if driver_name in EXECUTE_RETURNS_CURSOR:
        cursor = await conn.execute(query)
    else:
        cursor = await conn.cursor()
        await cursor.execute(query)
    try:
        if cursor.description is None:
            return []
        return [tuple(row) for row in await cursor.fetchall()]
    finally:
        await close_cursor(cursor)


#: Async drivers whose connection has ``execute()`` returning a cursor; the
#: others (aiopg, aiomysql) only have DB-API's ``await conn.cursor()``.
EXECUTE_RETURNS_CURSOR = frozenset({"psycopg", "aiosqlite"})


async def close_cursor(cursor: Any) -> None:
    """Close an async driver's cursor: aiopg's ``close()`` is a plain call."""
    closing = cursor.close()
    if inspect.isawaitable(closing):
        await closing


def scalar(rows: list[tuple[Any, ...]]) -> Any:
    """Return the first column of the first row, or None."""
    return rows[0][0] if rows and rows[0] else None


def as_int(value: Any) -> int | None:
    """Convert a setting's value to int, or None when absent or not a number."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


PG_BUDGET_QUERIES = (
    "SHOW max_connections",
    "SHOW superuser_reserved_connections",
    # PostgreSQL 16+ only; older servers fail this query and yield nothing.
    "SELECT current_setting('reserved_connections', true)",
    "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'",
)


def pg_budget(target: Target) -> dict[str, int | None]:
    """Read PostgreSQL's connection limits: max, reserved, and in use now."""
    rows = fetch_all(target, PG_BUDGET_QUERIES)
    max_conn, su_reserved, reserved, in_use = (as_int(scalar(r)) for r in rows)
    return {
        "max_connections": max_conn,
        "reserved_connections": (su_reserved or 0) + (reserved or 0),
        "in_use": in_use,
    }
