"""A Starlette app (run by uvicorn, one worker) over one of several async pools.

The pool is chosen by the ``BENCH_POOL`` environment variable; everything else
is the same code for every pool of a family:

* asyncpg family (``asyncpg``, ``asyncpg-noreset``, ``pk-asyncpg``,
  ``pk-asyncpg-full``, ``pk-asyncpg-unfair`` with ``fair=False``,
  ``pk-asyncpg-bounded`` with ``fair="bounded"``):
  ``async with pool.acquire() as conn`` and asyncpg's own ``fetchval`` /
  ``transaction()``. poolkeeper's ``AsyncPool`` offers the
  same ``acquire()`` as asyncpg's pool, so the handlers do not change.
* psycopg family (``psycopg_pool``, ``pk-psycopg``): ``async with
  pool.connection() as conn`` and psycopg 3's async ``execute`` /
  ``transaction()``; both pools commit an open transaction on the way out.
* SQLAlchemy family (``sqlalchemy``, ``pk-sqlalchemy``): ``create_async_engine``
  over asyncpg, with SQLAlchemy's default pool or poolkeeper's
  ``poolkeeper.integrations.sqlalchemy.AsyncPool`` as ``poolclass``.

Every pool is static at ``BENCH_POOL_SIZE`` connections (default 20), opened
before the first request, and names its server sessions ``BENCH_APPNAME`` so
the runner can count them in ``pg_stat_activity``.

Routes: ``/query`` runs one statement; ``/tx`` runs a short read-only
transaction (BEGIN, two statements, COMMIT: four round trips); ``/health``
answers without touching the database.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from benchmarks.apps.common import (
    APPNAME,
    DSN,
    PG_FIRST,
    PG_SECOND,
    POOL,
    SIZE,
    sqlalchemy_statements,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

Handler = Callable[[int], Awaitable[int]]


def _asyncpg_dsn() -> str:
    return DSN.replace("postgresql://", "postgresql+asyncpg://", 1)


async def _no_reset(conn: Any) -> None:
    """asyncpg ``reset=`` hook that sends nothing to the server."""


class AsyncpgFamily:
    """Handlers over an asyncpg-style pool: ``acquire()`` yields an asyncpg connection."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    async def query(self, n: int) -> int:
        async with self.pool.acquire() as conn:
            value: int = await conn.fetchval("SELECT $1::int + 1", n)
        return value

    async def tx(self, n: int) -> int:
        async with self.pool.acquire() as conn, conn.transaction():
            a: int = await conn.fetchval("SELECT $1::int + 1", n)
            b: int = await conn.fetchval("SELECT $1::int * 2", a)
        return b


class PsycopgFamily:
    """Handlers over a psycopg-style pool: ``connection()`` yields an AsyncConnection."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    async def query(self, n: int) -> int:
        async with self.pool.connection() as conn:
            cur = await conn.execute(PG_FIRST, (n,))
            row = await cur.fetchone()
        return int(row[0])

    async def tx(self, n: int) -> int:
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(PG_FIRST, (n,))
            a = (await cur.fetchone())[0]
            cur = await conn.execute(PG_SECOND, (a,))
            b = (await cur.fetchone())[0]
        return int(b)


class SqlalchemyFamily:
    """Handlers over an ``AsyncEngine``."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.q1, self.q2 = sqlalchemy_statements()

    async def query(self, n: int) -> int:
        async with self.engine.connect() as conn:
            value: int = (await conn.execute(self.q1, {"n": n})).scalar_one()
        return value

    async def tx(self, n: int) -> int:
        async with self.engine.begin() as conn:
            a = (await conn.execute(self.q1, {"n": n})).scalar_one()
            b: int = (await conn.execute(self.q2, {"n": a})).scalar_one()
        return b


@contextlib.asynccontextmanager
async def open_pool() -> AsyncIterator[Any]:
    """Open the pool ``BENCH_POOL`` names, filled to its size; close it after."""
    settings = {"application_name": APPNAME}
    if POOL in ("asyncpg", "asyncpg-noreset"):
        import asyncpg

        kwargs: dict[str, Any] = (
            {"reset": _no_reset} if POOL == "asyncpg-noreset" else {}
        )
        pool = await asyncpg.create_pool(
            DSN, min_size=SIZE, max_size=SIZE, server_settings=settings, **kwargs
        )
        try:
            yield AsyncpgFamily(pool)
        finally:
            await pool.close()
    elif POOL in (
        "pk-asyncpg",
        "pk-asyncpg-full",
        "pk-asyncpg-unfair",
        "pk-asyncpg-bounded",
        "pk-psycopg",
    ):
        import poolkeeper

        if POOL == "pk-psycopg":
            url = DSN.replace("postgresql://", "postgresql+psycopg://", 1)
            args: dict[str, Any] = {"application_name": APPNAME}
        else:
            url, args = _asyncpg_dsn(), {"server_settings": settings}
        reset = {"reset": "full"} if POOL == "pk-asyncpg-full" else {}
        fair = {"pk-asyncpg-unfair": False, "pk-asyncpg-bounded": "bounded"}.get(
            POOL, True
        )
        async with poolkeeper.AsyncPool(
            url, min_size=SIZE, max_size=SIZE, connect_args=args, fair=fair, **reset
        ) as pk:
            await pk.open(wait=True, timeout=30)
            yield PsycopgFamily(pk) if POOL == "pk-psycopg" else AsyncpgFamily(pk)
    elif POOL == "psycopg_pool":
        from psycopg_pool import AsyncConnectionPool

        async with AsyncConnectionPool(
            DSN,
            min_size=SIZE,
            max_size=SIZE,
            kwargs={"application_name": APPNAME},
            open=False,
        ) as pp:
            await pp.wait(timeout=30)
            yield PsycopgFamily(pp)
    elif POOL in ("sqlalchemy", "pk-sqlalchemy"):
        from sqlalchemy.ext.asyncio import create_async_engine

        extra: dict[str, Any] = {}
        if POOL == "pk-sqlalchemy":
            from poolkeeper.integrations.sqlalchemy import AsyncPool

            extra["poolclass"] = AsyncPool
        engine = create_async_engine(
            _asyncpg_dsn(),
            pool_size=SIZE,
            max_overflow=0,
            connect_args={"server_settings": settings},
            **extra,
        )
        # SQLAlchemy's pool opens lazily: open SIZE connections at once so
        # every pool starts full.
        conns = [await engine.connect() for _ in range(SIZE)]
        for conn in conns:
            await conn.close()
        try:
            yield SqlalchemyFamily(engine)
        finally:
            await engine.dispose()
    else:
        raise SystemExit(f"unknown BENCH_POOL {POOL!r}")


STATE: dict[str, Any] = {}


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    async with open_pool() as family:
        STATE["family"] = family
        yield


def _route(kind: str) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        handler: Handler = getattr(STATE["family"], kind)
        value = await handler(random.randrange(1000))
        return PlainTextResponse(str(value))

    return endpoint


async def health(request: Request) -> Response:
    return PlainTextResponse("ok" if "family" in STATE else "starting")


app = Starlette(
    routes=[
        Route("/query", _route("query")),
        Route("/tx", _route("tx")),
        Route("/health", health),
    ],
    lifespan=lifespan,
)
