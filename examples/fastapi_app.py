"""A FastAPI app on an :class:`poolkeeper.AsyncPool` (asyncpg).

- The pool lives for the application's lifetime: the lifespan handler opens
  it at startup (waiting for ``min_size`` connections, so a bad URL fails the
  start instead of the first request) and closes it at shutdown.
- Endpoints get a connection through a dependency that borrows it for the
  request and runs the request in one transaction: committed when the
  endpoint returns, rolled back when it raises (including ``HTTPException``),
  then the connection goes back to the pool.

Run it locally (from the repository root, against the local PostgreSQL;
``DATABASE_URL`` selects another database), then open
http://127.0.0.1:8000/double/21::

    .venv/bin/pip install -e ".[fastapi]" && .venv/bin/python examples/fastapi_app.py --port 8000

The ``fastapi`` extra brings FastAPI, uvicorn and asyncpg. In production, serve
it with ``uvicorn examples.fastapi_app:app`` as usual.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request

import poolkeeper

DEFAULT_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


async def connection(request: Request) -> AsyncIterator[Any]:
    """Borrow a connection for one request, inside one transaction."""
    # asyncpg runs each statement in its own transaction unless one is open,
    # so the request's transaction is explicit: an exception from the endpoint
    # (HTTPException included) comes back through this ``yield`` and rolls it
    # back; otherwise it commits. Then the pool takes the connection back.
    async with request.app.state.pool.connection() as conn, conn.transaction():
        yield conn


# Module level, not inside create_app: FastAPI resolves the (string)
# annotations of endpoints in the module's globals.
Conn = Annotated[Any, Depends(connection)]


def create_app(
    database_url: str | None = None, *, table: str = "notes", **pool_kwargs: Any
) -> FastAPI:
    """Build the app.

    Args:
        database_url: An asyncpg URL (default: ``DATABASE_URL`` or the local
            test server).
        table: Name of the notes table the app creates and uses.
        **pool_kwargs: :class:`poolkeeper.AsyncPool` arguments.
    """
    url = database_url or os.environ.get("DATABASE_URL", DEFAULT_URL)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with poolkeeper.AsyncPool(url, **pool_kwargs) as pool:
            await pool.open(wait=True)
            async with pool.connection() as conn:
                await conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {table} (id serial PRIMARY KEY, text text)"
                )
            app.state.pool = pool
            yield

    app = FastAPI(lifespan=lifespan)

    @app.get("/double/{n}")
    async def double(n: int, conn: Conn) -> dict[str, int]:
        return {"n": n, "double": await conn.fetchval("SELECT $1::int * 2", n)}

    @app.post("/notes")
    async def add_note(text: str, conn: Conn) -> dict[str, Any]:
        note_id = await conn.fetchval(
            f"INSERT INTO {table} (text) VALUES ($1) RETURNING id", text
        )
        if text == "":
            # The insert above is rolled back: the dependency sees the error.
            raise HTTPException(status_code=422, detail="empty note")
        return {"id": note_id, "text": text}

    @app.get("/notes")
    async def list_notes(conn: Conn) -> list[str]:
        rows = await conn.fetch(f"SELECT text FROM {table} ORDER BY id")
        return [r["text"] for r in rows]

    @app.get("/pool")
    async def pool_stats(request: Request) -> dict[str, int]:
        stats = request.app.state.pool.stats()
        return {"size": stats.size, "in_use": stats.in_use, "max_size": stats.max_size}

    return app


app = create_app(min_size=1, max_size=10)


def main() -> None:
    """Serve :data:`app` with uvicorn (``--host``, ``--port``)."""
    import argparse

    import uvicorn

    parser = argparse.ArgumentParser(description="Serve the example app.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
