"""``examples/fastapi_app.py`` through httpx's ASGI transport, against PostgreSQL.

httpx's ASGI transport does not run the lifespan protocol, so the test enters
the app's lifespan itself (``app.router.lifespan_context``), as a server does
at startup and shutdown.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.integration.frameworks.conftest import with_driver
from tests.integration.frameworks.examples import load_example

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

pytest.importorskip("fastapi")


@pytest.mark.anyio
async def test_lifespan_dependency_and_transactions(
    postgres_url: str, table_name: str, admin: Any
) -> None:
    example = load_example("fastapi_app")
    app = example.create_app(
        with_driver(postgres_url, "asyncpg"), table=table_name, min_size=1, max_size=3
    )
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://test"
            ) as client,
        ):
            assert (await client.get("/double/21")).json() == {"n": 21, "double": 42}
            created = await client.post("/notes", params={"text": "first"})
            assert created.status_code == 200
            rejected = await client.post("/notes", params={"text": ""})
            assert rejected.status_code == 422
            assert (await client.get("/notes")).json() == ["first"]  # rolled back

            # 30 concurrent requests share at most max_size connections.
            responses = await asyncio.gather(
                *(client.get(f"/double/{i}") for i in range(30))
            )
            assert [r.json()["double"] for r in responses] == [2 * i for i in range(30)]
            stats = (await client.get("/pool")).json()
            assert stats["max_size"] == 3
            assert stats["size"] <= 3
            assert stats["in_use"] == 0
            pool = app.state.pool
        assert repr(pool).split()[3] == "closed"  # shutdown closed the pool
    finally:
        admin.execute(f"DROP TABLE IF EXISTS {table_name}")
