"""MariaDB and sqlite drivers: the next borrower's transaction API works as on a fresh connection.

These drivers keep no client-side transaction object (``begin()`` sends
``BEGIN``; sqlite's state is the library's own), so the pool's commit or
rollback leaves nothing for them to disagree about; this checks it, for a
transaction begun through the driver's API and left open on a normal exit
and on an exception. The PostgreSQL drivers, which do keep such objects,
are covered in ``postgres/test_client_state.py``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

import poolkeeper
from tests.conftest import import_driver

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

CASES = [
    pytest.param(("mysql+pymysql", "pymysql"), marks=pytest.mark.mysql, id="pymysql"),
    pytest.param(("mysql+mysqldb", "MySQLdb"), marks=pytest.mark.mysql, id="mysqldb"),
    pytest.param(
        ("mysql+aiomysql", "aiomysql"), marks=pytest.mark.mysql, id="aiomysql"
    ),
    pytest.param(("sqlite", "sqlite3"), marks=pytest.mark.sqlite, id="sqlite3"),
    pytest.param(
        ("sqlite+aiosqlite", "aiosqlite"), marks=pytest.mark.sqlite, id="aiosqlite"
    ),
]


class Boom(Exception):
    """The borrower's own error."""


@pytest.fixture(params=CASES)
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A URL of the driver under test, with an empty table ``t (x integer)``."""
    scheme, package = request.param
    import_driver(request.config, package)
    if scheme.startswith("sqlite"):
        target = f"{scheme}:///{tmp_path / 'tx.sqlite'}"
    else:
        mysql_url: str = request.getfixturevalue("mysql_url")
        target = urlunsplit(urlsplit(mysql_url)._replace(scheme=scheme))
    table = f"pk_tx_{uuid.uuid4().hex[:10]}"
    async with _pool(target) as pool, _borrow(pool) as conn:
        await _run(conn, f"CREATE TABLE {table} (x integer)")
    yield f"{target}#{table}"
    async with _pool(target) as pool, _borrow(pool) as conn:
        await _run(conn, f"DROP TABLE {table}")


def _pool(url: str) -> Any:
    cls = poolkeeper.AsyncPool if "aio" in url.split(":")[0] else poolkeeper.Pool
    return _Either(cls(url, min_size=1, max_size=1))


class _Either:
    """``async with`` over a sync or an async pool, and its ``connection()``."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    async def __aenter__(self) -> Any:
        if isinstance(self.pool, poolkeeper.AsyncPool):
            await self.pool.open()
        return self.pool

    async def __aexit__(self, *exc: object) -> None:
        if isinstance(self.pool, poolkeeper.AsyncPool):
            await self.pool.close()
        else:
            self.pool.close()


class _borrow:
    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.ctx = pool.connection()

    async def __aenter__(self) -> Any:
        if isinstance(self.pool, poolkeeper.AsyncPool):
            return await self.ctx.__aenter__()
        return self.ctx.__enter__()

    async def __aexit__(self, *exc: Any) -> None:
        if isinstance(self.pool, poolkeeper.AsyncPool):
            await self.ctx.__aexit__(*exc)
        else:
            self.ctx.__exit__(*exc)


async def _maybe(value: Any) -> Any:
    return await value if hasattr(value, "__await__") else value


async def _run(conn: Any, sql: str) -> list[Any]:
    cur = await _maybe(conn.cursor())
    await _maybe(cur.execute(sql))
    rows = list(await _maybe(cur.fetchall())) if cur.description else []
    await _maybe(cur.close())
    return rows


async def _begin(conn: Any) -> None:
    """Start a transaction through the driver's own API."""
    if hasattr(conn, "begin"):  # PyMySQL, mysqlclient, aiomysql
        await _maybe(conn.begin())
    else:  # sqlite3, aiosqlite
        await _maybe(conn.execute("BEGIN"))


@pytest.mark.parametrize("exit_with", ["normal", "exception"])
async def test_transaction_api_after_the_pool_ended_one(
    url: str, exit_with: str
) -> None:
    target, table = url.split("#")
    async with _pool(target) as pool:

        async def leave_open() -> None:
            async with _borrow(pool) as conn:
                await _begin(conn)
                await _run(conn, f"INSERT INTO {table} VALUES (1)")
                if exit_with == "exception":
                    raise Boom

        if exit_with == "exception":
            with pytest.raises(Boom):
                await leave_open()
        else:
            await leave_open()
        async with _borrow(pool) as conn:
            await _begin(conn)
            await _run(conn, f"INSERT INTO {table} VALUES (2)")
            await _maybe(conn.commit())
            rows = await _run(conn, f"SELECT x FROM {table} ORDER BY x")
        assert [r[0] for r in rows] == ([1, 2] if exit_with == "normal" else [2])
        assert pool.stats().connections_created == 1
