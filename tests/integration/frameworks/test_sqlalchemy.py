"""SQLAlchemy engines on poolkeeper pools, against the real PostgreSQL.

The ORM test is the article's example (create a table, add a user, query),
with the engine's pool replaced by poolkeeper. The article imports
``declarative_base`` from ``sqlalchemy.ext.declarative``, which SQLAlchemy 2.0
moved to ``sqlalchemy.orm`` (the old path warns); the test uses the new one.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from sqlalchemy import Column, Integer, String, create_engine, event, exc, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import declarative_base, sessionmaker

from poolkeeper.sqlalchemy import AsyncPool, Pool
from tests.integration.frameworks.conftest import backends, terminate, with_driver

pytestmark = [pytest.mark.integration, pytest.mark.postgres]


def _user_model(table: str) -> tuple[Any, Any]:
    base = declarative_base()

    class User(base):  # type: ignore[misc,valid-type]
        __tablename__ = table
        id = Column(Integer, primary_key=True)
        name = Column(String)
        email = Column(String)

    return base, User


def test_article_orm_example(postgres_url: str, table_name: str) -> None:
    # The article's engine arguments, with poolkeeper doing the pooling.
    engine = create_engine(
        with_driver(postgres_url, "psycopg"),
        poolclass=Pool,
        pool_size=10,
        max_overflow=20,
        pool_recycle=3600,
    )
    base, user_cls = _user_model(table_name)
    try:
        base.metadata.create_all(engine)
        session_factory = sessionmaker(bind=engine)
        with session_factory() as session:
            session.add(user_cls(name="John Doe", email="john.doe@example.com"))
            session.commit()
            users = session.query(user_cls).all()
            assert [(u.name, u.email) for u in users] == [
                ("John Doe", "john.doe@example.com")
            ]
        stats = engine.pool.poolkeeper_pool.stats()  # type: ignore[attr-defined]
        assert (stats.min_size, stats.max_size) == (0, 30)
        assert stats.in_use == 0
        assert "poolkeeper pool" in engine.pool.status()
        base.metadata.drop_all(engine)
    finally:
        engine.dispose()


def test_events_fire_and_pool_arguments_map(postgres_url: str, app_name: str) -> None:
    engine = create_engine(
        with_driver(postgres_url, "psycopg"),
        poolclass=Pool,
        pool_size=1,
        max_overflow=2,
        pool_timeout=5,
        connect_args={"application_name": app_name},
    )
    seen: dict[str, int] = {"connect": 0, "checkout": 0, "checkin": 0, "reset": 0}

    def count(name: str) -> Any:
        def listener(*args: Any) -> None:
            seen[name] += 1

        return listener

    for name in seen:
        event.listen(engine, name, count(name))
    try:
        for _ in range(3):
            with engine.connect() as conn:
                assert conn.execute(text("SELECT 1")).scalar() == 1
        assert seen["connect"] == 1  # one connection, reused
        assert seen["checkout"] == seen["checkin"] == seen["reset"] == 3
        pk = engine.pool.poolkeeper_pool  # type: ignore[attr-defined]
        assert (pk.stats().min_size, pk.stats().max_size) == (0, 3)
    finally:
        engine.dispose()


def test_pool_timeout_raises_sqlalchemy_timeout(postgres_url: str) -> None:
    engine = create_engine(
        with_driver(postgres_url, "psycopg"),
        poolclass=Pool,
        pool_size=1,
        max_overflow=0,
        pool_timeout=0.2,
    )
    try:
        with engine.connect():
            started = time.monotonic()
            with pytest.raises(exc.TimeoutError) as info:
                engine.connect()
            assert time.monotonic() - started < 2.0
            assert "timed out" in str(info.value)
    finally:
        engine.dispose()


def test_unlimited_overflow_is_refused(postgres_url: str) -> None:
    with pytest.raises(ValueError, match="max_overflow"):
        create_engine(
            with_driver(postgres_url, "psycopg"), poolclass=Pool, max_overflow=-1
        )


def test_disconnect_invalidates_and_next_checkout_reconnects(
    postgres_url: str, app_name: str, admin: Any
) -> None:
    engine = create_engine(
        with_driver(postgres_url, "psycopg"),
        poolclass=Pool,
        pool_size=2,
        max_overflow=0,
        connect_args={"application_name": app_name},
        # The error must reach SQLAlchemy: poolkeeper's idle validation would
        # otherwise catch the terminated session at checkout whenever the
        # steps below take longer than validate_after (a loaded machine).
        pool_options={"validate": "never"},
    )
    invalidated: list[object] = []
    event.listen(engine, "invalidate", lambda *a: invalidated.append(a[0]))
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        assert terminate(admin, app_name) >= 1
        with pytest.raises(exc.OperationalError) as info, engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        assert info.value.connection_invalidated
        assert invalidated
        # The broken connection went back to poolkeeper and was discarded; the
        # pool-wide invalidation retires any other old connection at checkout.
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 2")).scalar() == 2
        assert engine.pool.poolkeeper_pool.stats().in_use == 0  # type: ignore[attr-defined]
    finally:
        engine.dispose()


def test_pre_ping_hides_dead_connections(
    postgres_url: str, app_name: str, admin: Any
) -> None:
    engine = create_engine(
        with_driver(postgres_url, "psycopg"),
        poolclass=Pool,
        pool_size=2,
        max_overflow=0,
        pool_pre_ping=True,
        connect_args={"application_name": app_name},
    )
    try:
        with engine.connect() as a, engine.connect() as b:
            a.execute(text("SELECT 1"))
            b.execute(text("SELECT 1"))
        assert terminate(admin, app_name) == 2
        for _ in range(3):
            with engine.connect() as conn:
                assert conn.execute(text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()


def test_dispose_replaces_the_pool_and_busy_connections_still_return(
    postgres_url: str, app_name: str, admin: Any
) -> None:
    engine = create_engine(
        with_driver(postgres_url, "psycopg"),
        poolclass=Pool,
        pool_size=2,
        max_overflow=0,
        connect_args={"application_name": app_name},
    )
    try:
        old = engine.pool
        busy = engine.connect()
        busy.execute(text("SELECT 1"))
        engine.dispose()
        assert engine.pool is not old
        assert isinstance(engine.pool, Pool)
        busy.close()  # returns to the closed pool: closed, not kept
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar() == 1
        deadline = time.monotonic() + 5
        while backends(admin, app_name) > 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert backends(admin, app_name) <= 2
    finally:
        engine.dispose()


def test_threads_share_a_bounded_pool(postgres_url: str, app_name: str) -> None:
    engine = create_engine(
        with_driver(postgres_url, "psycopg"),
        poolclass=Pool,
        pool_size=2,
        max_overflow=2,
        connect_args={"application_name": app_name},
    )
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(20):
                with engine.connect() as conn:
                    conn.execute(text("SELECT pg_sleep(0.001)"))
        except BaseException as exc:
            errors.append(exc)

    try:
        threads = [threading.Thread(target=work) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        stats = engine.pool.poolkeeper_pool.stats()  # type: ignore[attr-defined]
        assert stats.connections_created <= 4
        assert stats.acquires >= 320
    finally:
        engine.dispose()


@pytest.mark.anyio
async def test_article_orm_example_async(postgres_url: str, table_name: str) -> None:
    engine = create_async_engine(
        with_driver(postgres_url, "asyncpg"),
        poolclass=AsyncPool,
        pool_size=5,
        max_overflow=15,
    )
    base, user_cls = _user_model(table_name)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(base.metadata.create_all)
        session_factory = async_sessionmaker(engine, class_=AsyncSession)
        async with session_factory() as session:
            session.add(user_cls(name="John Doe", email="john.doe@example.com"))
            await session.commit()
            result = await session.execute(
                text(f"SELECT name, email FROM {table_name}")
            )
            assert result.all() == [("John Doe", "john.doe@example.com")]
        stats = engine.pool.poolkeeper_pool.stats()  # type: ignore[attr-defined]
        assert (stats.min_size, stats.max_size, stats.in_use) == (0, 20, 0)
        async with engine.begin() as conn:
            await conn.run_sync(base.metadata.drop_all)
    finally:
        await engine.dispose()


@pytest.mark.anyio
async def test_async_invalidation_and_pre_ping(
    postgres_url: str, app_name: str, admin: Any
) -> None:
    url = with_driver(postgres_url, "asyncpg")
    args = {"server_settings": {"application_name": app_name}}
    # validate="never": the terminated sessions must reach SQLAlchemy, not be
    # caught by poolkeeper's idle validation first on a slow run.
    never = {"validate": "never"}
    engine = create_async_engine(
        url,
        poolclass=AsyncPool,
        pool_size=2,
        max_overflow=0,
        connect_args=args,
        pool_options=never,
    )
    pinged = create_async_engine(
        url,
        poolclass=AsyncPool,
        pool_size=2,
        max_overflow=0,
        pool_options=never,
        pool_pre_ping=True,
        connect_args={"server_settings": {"application_name": app_name + "-p"}},
    )
    try:
        for eng in (engine, pinged):
            async with eng.connect() as conn:
                await conn.execute(text("SELECT 1"))
        terminate(admin, app_name)
        terminate(admin, app_name + "-p")
        with pytest.raises(exc.DBAPIError) as info:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        assert info.value.connection_invalidated
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT 2"))).scalar() == 2
        # With pool_pre_ping the dead connection is replaced before use.
        async with pinged.connect() as conn:
            assert (await conn.execute(text("SELECT 3"))).scalar() == 3
    finally:
        await engine.dispose()
        await pinged.dispose()


@pytest.mark.anyio
async def test_async_timeout(postgres_url: str) -> None:
    engine = create_async_engine(
        with_driver(postgres_url, "asyncpg"),
        poolclass=AsyncPool,
        pool_size=1,
        max_overflow=0,
        pool_timeout=0.2,
    )
    try:
        async with engine.connect() as held:
            await held.execute(text("SELECT 1"))
            with pytest.raises(exc.TimeoutError):
                async with engine.connect():
                    pass
    finally:
        await engine.dispose()


def test_deprecated_integration_paths_alias_the_public_homes() -> None:
    import poolkeeper.django.mysql.base
    import poolkeeper.django.postgresql.base
    import poolkeeper.presets
    import poolkeeper.serverless
    import poolkeeper.sqlalchemy
    from poolkeeper.integrations import pgbouncer, serverless, sqlalchemy
    from poolkeeper.integrations.django.mysql import base as my_alias
    from poolkeeper.integrations.django.postgresql import base as pg_alias

    assert poolkeeper.sqlalchemy.Pool is sqlalchemy.Pool
    assert poolkeeper.sqlalchemy.AsyncPool is sqlalchemy.AsyncPool
    assert poolkeeper.serverless.ServerlessPool is serverless.ServerlessPool
    assert pgbouncer.transaction_mode_options is (
        poolkeeper.presets.pgbouncer_transaction
    )
    assert pg_alias.DatabaseWrapper is poolkeeper.django.postgresql.base.DatabaseWrapper
    assert my_alias.DatabaseWrapper is poolkeeper.django.mysql.base.DatabaseWrapper


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
def test_detach_frees_the_slot_at_once(
    backend: str, postgres_url: str, tmp_path: Any
) -> None:
    """As with QueuePool, a detached connection leaves the pool: a full pool
    opens another at once, and the detached one stays its caller's, open."""
    if backend == "postgres":
        url = with_driver(postgres_url, "psycopg")
    else:
        url = f"sqlite:///{tmp_path / 'detach.sqlite'}"
    engine = create_engine(
        url, poolclass=Pool, pool_size=1, max_overflow=0, pool_timeout=0.5
    )
    try:
        detached = engine.connect()
        detached.detach()
        started = time.monotonic()
        with engine.connect() as other:  # no TimeoutError after 0.5 s
            assert other.execute(text("SELECT 2")).scalar() == 2
        assert time.monotonic() - started < 0.5
        # Still open, and its caller's: not closed nor handed out by the pool.
        assert detached.execute(text("SELECT 1")).scalar() == 1
        stats = engine.pool._pk.stats()  # type: ignore[attr-defined]
        assert (stats.size, stats.in_use) == (1, 0)
        assert stats.closed_by_reason["detached"] == 1
        detached.close()
        with engine.connect() as again:
            assert again.execute(text("SELECT 3")).scalar() == 3
        assert engine.pool._pk.stats().size == 1  # type: ignore[attr-defined]
    finally:
        engine.dispose()


@pytest.mark.anyio
async def test_async_detach_frees_the_slot_at_once(postgres_url: str) -> None:
    engine = create_async_engine(
        with_driver(postgres_url, "asyncpg"),
        poolclass=AsyncPool,
        pool_size=1,
        max_overflow=0,
        pool_timeout=0.5,
    )
    try:
        detached = await engine.connect()
        await detached.run_sync(lambda sync: sync.detach())
        async with engine.connect() as other:
            assert (await other.execute(text("SELECT 2"))).scalar() == 2
        assert (await detached.execute(text("SELECT 1"))).scalar() == 1
        stats = engine.pool._pk.stats()  # type: ignore[attr-defined]
        assert (stats.size, stats.in_use, stats.closed_by_reason["detached"]) == (
            1,
            0,
            1,
        )
        await detached.close()
    finally:
        await engine.dispose()
