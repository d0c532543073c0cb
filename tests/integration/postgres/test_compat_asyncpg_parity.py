"""``poolkeeper.compat.asyncpg.create_pool`` behaves as ``asyncpg.create_pool``.

Each scenario runs twice, on asyncpg's own pool and on poolkeeper's, with the
same arguments, and records what a user can observe through asyncpg's API:
hook calls, warnings, the transaction state and transaction API of the next
borrower, callbacks reaching it, server-side settings and ``LISTEN``s, and
whether a connection was reused. The two records must be equal.
"""

from __future__ import annotations

import asyncio
import uuid
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from poolkeeper.compat import asyncpg as compat_asyncpg

pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.anyio]

#: A scenario appends this to the call log to make the next setup() fail.
FAIL_NEXT_SETUP = "fail next setup"


async def _both(
    dsn: str, scenario: Callable[[Any, list[str]], Awaitable[dict[str, Any]]], **kw: Any
) -> list[dict[str, Any]]:
    """Run ``scenario(pool, calls)`` on each pool; return the two records."""
    records = []
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    # asyncpg reports a transaction left open through the loop's handler.
    loop.set_exception_handler(lambda _loop, _context: None)
    try:
        for factory in (asyncpg.create_pool, compat_asyncpg.create_pool):
            calls: list[str] = []

            async def init(conn: Any, calls: list[str] = calls) -> None:
                calls.append("init")

            async def setup(conn: Any, calls: list[str] = calls) -> None:
                calls.append("setup")
                if calls[-2:-1] == [FAIL_NEXT_SETUP]:
                    raise RuntimeError("setup failed")

            async with factory(
                dsn, min_size=1, max_size=1, init=init, setup=setup, **kw
            ) as pool:
                record = await scenario(pool, calls)
            record["calls"] = calls
            records.append(record)
    finally:
        loop.set_exception_handler(previous)
    return records


async def _left_behind(pool: Any, calls: list[str]) -> dict[str, Any]:
    """A borrower leaves a transaction, listeners and a setting behind."""
    channel = f"pk_parity_{uuid.uuid4().hex[:8]}"
    record: dict[str, Any] = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with pool.acquire() as conn:
            pid = await conn.fetchval("SELECT pg_backend_pid()")
            await conn.execute("SET search_path TO pk_parity")
            # LISTEN outside the transaction, so that its rollback keeps it.
            await conn.add_listener(channel, lambda *a: calls.append("notify"))
            conn.add_log_listener(lambda *a: calls.append("log"))
            tr = conn.transaction()
            await tr.start()
    record["warnings"] = sorted(type(w.message).__name__ for w in caught)
    async with pool.acquire() as conn:
        record["reused"] = await conn.fetchval("SELECT pg_backend_pid()") == pid
        record["in_transaction"] = conn.is_in_transaction()
        async with conn.transaction():
            record["search_path"] = await conn.fetchval("SHOW search_path")
        try:
            await tr.rollback()
            record["stale"] = "rolled back"
        except asyncpg.InterfaceError as exc:
            record["stale"] = "released" in str(exc)
        await conn.execute(f"NOTIFY {channel}")
        await conn.execute("DO $$BEGIN RAISE NOTICE 'pk'; END$$")
        record["listening"] = await conn.fetchval(
            "SELECT count(*) FROM pg_listening_channels()"
        )
        await asyncio.sleep(0.05)  # callbacks run with call_soon
    return record


async def test_default_reset_matches_asyncpg(dsn: str) -> None:
    theirs, ours = await _both(dsn, _left_behind)
    assert theirs["in_transaction"] is False
    assert theirs["warnings"] == ["InterfaceWarning", "InterfaceWarning"]
    assert ours == theirs


async def test_custom_reset_matches_asyncpg(dsn: str) -> None:
    async def reset(conn: Any) -> None:
        await conn.execute("SET search_path TO pk_reset")

    theirs, ours = await _both(dsn, _left_behind, reset=reset)
    assert theirs["search_path"] == "pk_reset"
    # With a custom reset asyncpg leaves the borrower's LISTEN on the
    # server (its callbacks are gone); poolkeeper also unregisters it.
    assert (theirs.pop("listening"), ours.pop("listening")) == (1, 0)
    assert ours == theirs


async def _setup_fails_once(pool: Any, calls: list[str]) -> dict[str, Any]:
    record: dict[str, Any] = {}
    async with pool.acquire() as conn:
        pid = await conn.fetchval("SELECT pg_backend_pid()")
    calls.append(FAIL_NEXT_SETUP)
    try:
        await pool.acquire()
    except RuntimeError as exc:
        record["error"] = str(exc)
    async with pool.acquire() as conn:
        record["reused"] = await conn.fetchval("SELECT pg_backend_pid()") == pid
    return record


async def test_failing_setup_matches_asyncpg(dsn: str) -> None:
    theirs, ours = await _both(dsn, _setup_fails_once)
    assert theirs["error"] == "setup failed"
    assert theirs["reused"] is False
    assert ours == theirs
