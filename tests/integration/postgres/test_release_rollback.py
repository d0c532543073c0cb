"""release() rolls back an open transaction, and says so once per call site.

connection() commits on a normal exit; acquire()/release() (and acquire()'s
``with`` block) roll back, as psycopg_pool's putconn and asyncpg's reset do.
The pool never does that silently: a WARNING names the caller's file:line,
once per call site.
"""

from __future__ import annotations

import logging
import sys
import uuid
from collections.abc import Iterator

import psycopg
import pytest

import poolkeeper

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


class Scene:
    """A fresh table, its row count, and the rollback warnings logged."""

    def __init__(
        self,
        admin: psycopg.Connection[tuple[object, ...]],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        self.admin = admin
        self.caplog = caplog
        self.table = f"pk_rb_{uuid.uuid4().hex[:10]}"

    def count(self) -> int:
        row = self.admin.execute(f"SELECT count(*) FROM {self.table}").fetchone()
        assert row is not None
        return int(str(row[0]))

    def rollback_warnings(self) -> list[str]:
        return [
            r.getMessage()
            for r in self.caplog.records
            if r.levelno == logging.WARNING and "was rolled back" in r.getMessage()
        ]


@pytest.fixture
def scene(
    admin: psycopg.Connection[tuple[object, ...]], caplog: pytest.LogCaptureFixture
) -> Iterator[Scene]:
    caplog.set_level(logging.WARNING, logger="poolkeeper")
    scene = Scene(admin, caplog)
    admin.execute(f"CREATE TABLE {scene.table} (n int)")
    yield scene
    admin.execute(f"DROP TABLE {scene.table}")


async def test_async_psycopg_release_rolls_back_and_warns_once_per_site(
    postgres_url: str, scene: Scene
) -> None:
    table = scene.table
    async with poolkeeper.AsyncPool(postgres_url, min_size=0, max_size=2) as pool:
        for n in range(2):
            async with pool.acquire() as conn:
                await conn.execute(f"INSERT INTO {table} VALUES ({n})")
            exit_line = _line_of("async with pool.acquire() as conn:")
        for n in range(2):
            conn = await pool.acquire()
            await conn.execute(f"INSERT INTO {table} VALUES ({n})")
            await pool.release(conn)
            release_line = _line_of("await pool.release(conn)")
        async with pool.connection() as conn:
            await conn.execute(f"INSERT INTO {table} VALUES (9)")
    assert scene.count() == 1  # only connection()'s insert was committed
    messages = scene.rollback_warnings()
    assert len(messages) == 2, messages  # two sites, each logged once
    assert f"{__file__}:{exit_line}" in messages[0]
    assert f"{__file__}:{release_line}" in messages[1]
    assert all("rolled back" in m and "connection()" in m for m in messages)


def test_sync_psycopg_release_rolls_back_and_warns_once_per_site(
    postgres_url: str, scene: Scene
) -> None:
    table = scene.table
    with poolkeeper.Pool(postgres_url, min_size=0, max_size=2) as pool:
        for n in range(2):
            conn = pool.acquire()
            conn.execute(f"INSERT INTO {table} VALUES ({n})")
            pool.release(conn)
            release_line = _line_of("pool.release(conn)")
        with pool.connection() as conn:
            conn.execute(f"INSERT INTO {table} VALUES (9)")
    assert scene.count() == 1
    messages = scene.rollback_warnings()
    assert len(messages) == 1, messages
    assert f"{__file__}:{release_line}" in messages[0]


def _line_of(text: str) -> int:
    """The last line of this file before the caller's that holds ``text``."""
    caller = sys._getframe(1).f_lineno
    with open(__file__, encoding="utf-8") as f:
        lines = f.read().splitlines()[: caller - 1]
    return max(i for i, line in enumerate(lines, 1) if text in line)
