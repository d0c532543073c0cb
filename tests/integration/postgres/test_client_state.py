"""A returned connection is, through its driver's own API, like a fresh one.

For each PostgreSQL driver: a transaction started through the driver's own
transaction object and left open (normal exit, exception, ``release()``, a
``reset`` hook) is ended so that the driver agrees it is over, and the next
borrower's transaction API works as on a fresh connection, on the same
connection (no reconnect). Callbacks, listeners and received messages a
borrower leaves on the connection object do not reach the next borrower;
those the pool's ``configure`` hook installed stay.
"""

from __future__ import annotations

import asyncio
import gc
import uuid
import warnings
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import psycopg
import pytest

import poolkeeper

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

_NOTICE = "DO $$BEGIN RAISE NOTICE 'pk-hello'; END$$"

#: How a borrower leaves a transaction open: its block ends normally, ends
#: with an exception, the connection is given back with release(), or the
#: pool has a reset hook (normal exit).
FORMS = ["commit", "exception", "release", "reset"]


def _url(postgres_url: str, scheme: str) -> str:
    return urlunsplit(urlsplit(postgres_url)._replace(scheme=scheme))


def _name() -> str:
    return f"pk_tx_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def table(postgres_url: str) -> Any:
    """A throwaway table ``<name> (x integer)``, dropped afterwards."""
    name = _name()
    admin_url = _url(postgres_url, "postgresql")
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"CREATE TABLE {name} (x integer)")
        try:
            yield name
        finally:
            admin.execute(f"DROP TABLE IF EXISTS {name}")


def _expected(form: str) -> list[int]:
    # The first borrower's row survives only a normal exit; the second
    # borrower's row always commits.
    return [1, 2] if form in ("commit", "reset") else [2]


def _pool_kwargs(form: str) -> dict[str, Any]:
    return {"reset": _no_reset} if form == "reset" else {}


def _no_reset(conn: Any) -> None:
    return None


async def _ano_reset(conn: Any) -> None:
    return None


class Boom(Exception):
    """The borrower's own error."""


# -- asyncpg ----------------------------------------------------------------------


async def _aleave_open(
    pool: Any, form: str, start: Callable[[Any], Awaitable[None]]
) -> None:
    """Run ``start`` on a borrowed connection and give it back the ``form`` way."""
    if form == "release":
        conn = await pool.acquire()
        await start(conn)
        await pool.release(conn)
        return

    async def fail() -> None:
        async with pool.connection() as conn:
            await start(conn)
            if form == "exception":
                raise Boom

    if form == "exception":
        with pytest.raises(Boom):
            await fail()
    else:
        await fail()


def _leave_open(pool: Any, form: str, start: Callable[[Any], None]) -> None:
    """:func:`_aleave_open` for a sync pool."""
    if form == "release":
        conn = pool.acquire()
        start(conn)
        pool.release(conn)
        return

    def fail() -> None:
        with pool.connection() as conn:
            start(conn)
            if form == "exception":
                raise Boom

    if form == "exception":
        with pytest.raises(Boom):
            fail()
    else:
        fail()


async def _asyncpg_leave_open(pool: Any, form: str, table: str) -> Any:
    """Leave an asyncpg transaction open; return its (now stale) object."""
    left: list[Any] = []

    async def start(conn: Any) -> None:
        tr = conn.transaction()
        await tr.start()
        left.append(tr)
        await conn.execute(f"INSERT INTO {table} VALUES (1)")

    await _aleave_open(pool, form, start)
    return left[0]


@pytest.mark.anyio
@pytest.mark.parametrize("form", [*FORMS, "full"])
async def test_asyncpg_transaction_object_ended_through_asyncpg(
    postgres_url: str, table: str, form: str
) -> None:
    loop_errors: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    # asyncpg's Connection.reset() reports a transaction it still believes
    # open through the loop's exception handler.
    loop.set_exception_handler(lambda _loop, context: loop_errors.append(context))
    kwargs: dict[str, Any] = {"reset": _ano_reset} if form == "reset" else {}
    if form == "full":
        kwargs = {"reset": "full"}
    try:
        async with poolkeeper.AsyncPool(
            _url(postgres_url, "postgresql+asyncpg"), min_size=1, max_size=1, **kwargs
        ) as pool:
            stale = await _asyncpg_leave_open(pool, form, table)
            async with pool.connection() as conn:
                assert not conn.is_in_transaction()
                # A fresh connection's transaction(): BEGIN, not SAVEPOINT.
                async with conn.transaction():
                    await conn.execute(f"INSERT INTO {table} VALUES (2)")
                    # The previous borrower's object cannot end this one.
                    with pytest.raises(asyncpg.InterfaceError, match="released"):
                        await stale.rollback()
                assert not conn.is_in_transaction()
                rows = await conn.fetch(f"SELECT x FROM {table} ORDER BY x")
            assert [r["x"] for r in rows] == _expected(
                "commit" if form == "full" else form
            )
            assert pool.stats().connections_created == 1
    finally:
        loop.set_exception_handler(previous)
    assert loop_errors == []


@pytest.mark.anyio
async def test_asyncpg_callbacks_do_not_reach_the_next_borrower(
    postgres_url: str,
) -> None:
    channel = _name()
    seen: list[str] = []
    kept: list[str] = []

    def configure(conn: Any) -> None:
        # Installed by configure: they stay for the connection's life.
        conn.add_query_logger(lambda record: kept.append(record.query))
        conn.add_termination_listener(lambda conn: kept.append("terminated"))

    async with poolkeeper.AsyncPool(
        _url(postgres_url, "postgresql+asyncpg"),
        min_size=1,
        max_size=1,
        configure=configure,
    ) as pool:
        async with pool.connection() as conn:
            await conn.add_listener(channel, lambda *args: seen.append("notify"))
            conn.add_log_listener(lambda *args: seen.append("log"))
            conn.add_termination_listener(lambda conn: seen.append("terminated"))
            conn.add_query_logger(lambda record: seen.append("query"))
        async with pool.connection() as again:
            assert again is conn
            await again.execute(f"NOTIFY {channel}")
            await again.execute(_NOTICE)
            listening = await again.fetchval(
                "SELECT count(*) FROM pg_listening_channels()"
            )
            assert listening == 0
            await asyncio.sleep(0.05)  # asyncpg runs callbacks with call_soon
        assert pool.stats().connections_created == 1
    await asyncio.sleep(0.05)  # termination listeners run after close
    assert seen == []
    assert f"NOTIFY {channel}" in kept
    assert kept[-1] == "terminated"


@pytest.mark.anyio
async def test_asyncpg_full_reset_is_one_round_trip(postgres_url: str) -> None:
    """reset="full" on asyncpg: one message clears what Connection.reset() and
    the rest of DISCARD ALL clear, and the client-side state asyncpg keeps."""
    sent: list[str] = []

    def configure(conn: Any) -> None:
        conn.add_query_logger(lambda record: sent.append(record.query))

    async with poolkeeper.AsyncPool(
        _url(postgres_url, "postgresql+asyncpg"),
        min_size=1,
        max_size=1,
        reset="full",
        configure=configure,
    ) as pool:
        async with pool.connection() as conn:
            default_timeout = await conn.fetchval("SHOW statement_timeout")
            await conn.execute("SET statement_timeout = '4321ms'")
            await conn.execute("CREATE TEMP TABLE pk_one_trip (x int)")
            await conn.execute("SELECT pg_advisory_lock(4242)")
            await conn.execute("DECLARE pk_cur CURSOR WITH HOLD FOR SELECT 1")
            conn.add_log_listener(lambda *args: None)
            await asyncio.sleep(0.01)  # asyncpg calls query loggers with call_soon
            before = len(sent)
        await asyncio.sleep(0.01)
        returned = sent[before:]
        async with pool.connection() as again:
            assert again is conn
            assert len(returned) == 1, returned  # one round trip
            assert "RESET ALL" in returned[0] and "DISCARD TEMP" in returned[0]
            assert not again._log_listeners and again._top_xact is None
            assert await again.fetchval("SHOW statement_timeout") == default_timeout
            assert (
                await again.fetchval(
                    "SELECT count(*) FROM pg_class"
                    " WHERE relname = 'pk_one_trip' AND relpersistence = 't'"
                )
                == 0
            )
            assert (
                await again.fetchval(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                    " AND pid = pg_backend_pid()"
                )
                == 0
            )
            cursors = "SELECT count(*) FROM pg_cursors WHERE name = 'pk_cur'"
            assert await again.fetchval(cursors) == 0
        assert pool.stats().connections_created == 1


# -- psycopg 3 --------------------------------------------------------------------


def _psycopg_leave_open(pool: Any, form: str, table: str) -> None:
    def start(conn: Any) -> None:
        # A transaction block entered and never exited (as when a generator
        # holding a `with conn.transaction()` is left suspended). psycopg's
        # Transaction object itself: conn.transaction() wraps it in a
        # generator whose garbage collection would end the block.
        psycopg.Transaction(conn).__enter__()
        conn.execute(f"INSERT INTO {table} VALUES (1)")

    _leave_open(pool, form, start)


@pytest.mark.parametrize("form", FORMS)
def test_psycopg_transaction_block_ended_through_psycopg(
    postgres_url: str, table: str, form: str
) -> None:
    with poolkeeper.Pool(
        _url(postgres_url, "postgresql+psycopg"),
        min_size=1,
        max_size=1,
        **_pool_kwargs(form),
    ) as pool:
        _psycopg_leave_open(pool, form, table)
        with pool.connection() as conn:
            with conn.transaction():
                conn.execute(f"INSERT INTO {table} VALUES (2)")
            conn.commit()  # refused inside a block psycopg believes open
            rows = conn.execute(f"SELECT x FROM {table} ORDER BY x").fetchall()
        assert [r[0] for r in rows] == _expected(form)
        assert pool.stats().connections_created == 1


async def _apsycopg_leave_open(pool: Any, form: str, table: str) -> None:
    async def start(conn: Any) -> None:
        await psycopg.AsyncTransaction(conn).__aenter__()
        await conn.execute(f"INSERT INTO {table} VALUES (1)")

    await _aleave_open(pool, form, start)


@pytest.mark.anyio
@pytest.mark.parametrize("form", FORMS)
async def test_async_psycopg_transaction_block_ended_through_psycopg(
    postgres_url: str, table: str, form: str
) -> None:
    kwargs: dict[str, Any] = {"reset": _ano_reset} if form == "reset" else {}
    async with poolkeeper.AsyncPool(
        _url(postgres_url, "postgresql+psycopg"), min_size=1, max_size=1, **kwargs
    ) as pool:
        await _apsycopg_leave_open(pool, form, table)
        async with pool.connection() as conn:
            async with conn.transaction():
                await conn.execute(f"INSERT INTO {table} VALUES (2)")
            await conn.commit()
            cur = await conn.execute(f"SELECT x FROM {table} ORDER BY x")
            rows = await cur.fetchall()
        assert [r[0] for r in rows] == _expected(form)
        assert pool.stats().connections_created == 1


def _psycopg_configure(kept: list[str]) -> Callable[[Any], None]:
    def configure(conn: Any) -> None:
        conn.add_notice_handler(lambda diag: kept.append(diag.message_primary))

    return configure


@pytest.mark.parametrize("built_from", ["url", "callable"])
def test_psycopg_handlers_do_not_reach_the_next_borrower(
    postgres_url: str, built_from: str
) -> None:
    channel = _name()
    seen: list[str] = []
    kept: list[str] = []
    url = _url(postgres_url, "postgresql+psycopg")
    libpq_url = _url(postgres_url, "postgresql")
    with poolkeeper.Pool(
        url if built_from == "url" else lambda: psycopg.connect(libpq_url),
        min_size=1,
        max_size=1,
        configure=_psycopg_configure(kept),
    ) as pool:
        with pool.connection() as conn:
            conn.execute(f"LISTEN {channel}")
            conn.commit()
            # Received with no handler: queued for notifies(), never read.
            conn.execute(f"NOTIFY {channel}, 'unread'")
            conn.commit()
            conn.add_notice_handler(lambda diag: seen.append("notice"))
            conn.add_notify_handler(lambda notify: seen.append("notify"))
        with pool.connection() as again:
            assert again is conn
            again.execute(_NOTICE)
            assert [n.payload for n in again.notifies(timeout=0)] == []
        assert pool.stats().connections_created == 1
    assert seen == []
    assert kept == ["pk-hello"]


@pytest.mark.anyio
async def test_async_psycopg_handlers_do_not_reach_the_next_borrower(
    postgres_url: str,
) -> None:
    channel = _name()
    seen: list[str] = []
    kept: list[str] = []
    async with poolkeeper.AsyncPool(
        _url(postgres_url, "postgresql+psycopg"),
        min_size=1,
        max_size=1,
        configure=_psycopg_configure(kept),
    ) as pool:
        async with pool.connection() as conn:
            await conn.execute(f"LISTEN {channel}")
            await conn.commit()
            await conn.execute(f"NOTIFY {channel}, 'unread'")
            await conn.commit()
            conn.add_notice_handler(lambda diag: seen.append("notice"))
            conn.add_notify_handler(lambda notify: seen.append("notify"))
        async with pool.connection() as again:
            assert again is conn
            await again.execute(_NOTICE)
            assert [n.payload async for n in again.notifies(timeout=0)] == []
        assert pool.stats().connections_created == 1
    assert seen == []
    assert kept == ["pk-hello"]


# -- psycopg2 and aiopg -----------------------------------------------------------


def test_psycopg2_messages_do_not_reach_the_next_borrower(postgres_url: str) -> None:
    channel = _name()
    with poolkeeper.Pool(
        _url(postgres_url, "postgresql+psycopg2"), min_size=1, max_size=1
    ) as pool:
        with pool.connection() as conn:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f"LISTEN {channel}")
                cur.execute(f"NOTIFY {channel}, 'unread'")
                cur.execute(_NOTICE)
            conn.autocommit = False
            assert conn.notices and conn.notifies
        with pool.connection() as again:
            assert again is conn
            assert again.notices == []
            assert again.notifies == []
        assert pool.stats().connections_created == 1


@pytest.mark.anyio
async def test_aiopg_messages_do_not_reach_the_next_borrower(postgres_url: str) -> None:
    channel = _name()
    async with poolkeeper.AsyncPool(
        _url(postgres_url, "postgresql+aiopg"), min_size=1, max_size=1
    ) as pool:
        async with pool.connection() as conn:
            async with conn.cursor() as cur:
                await cur.execute(f"LISTEN {channel}")
                await cur.execute(f"NOTIFY {channel}, 'unread'")
                await cur.execute(_NOTICE)
            assert conn.notices
        async with pool.connection() as again:
            assert again is conn
            assert again.notices == []
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(again.notifies.get(), 0.2)
        assert pool.stats().connections_created == 1


@pytest.mark.anyio
@pytest.mark.parametrize("form", FORMS)
async def test_aiopg_transaction_object_then_a_fresh_one(
    postgres_url: str, table: str, form: str
) -> None:
    # aiopg keeps its Transaction on the borrower's cursor, not on the
    # connection: the pool's own COMMIT/ROLLBACK leaves nothing on the
    # connection (checked, nothing to fix). aiopg warns when a cursor whose
    # transaction was begun and never ended by it is collected.
    kwargs: dict[str, Any] = {"reset": _ano_reset} if form == "reset" else {}
    cursors: list[Any] = []

    async def start(conn: Any) -> None:
        cur = await conn.cursor()
        cursors.append(cur)
        await cur.begin()
        await cur.execute(f"INSERT INTO {table} VALUES (1)")

    async with poolkeeper.AsyncPool(
        _url(postgres_url, "postgresql+aiopg"), min_size=1, max_size=1, **kwargs
    ) as pool:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            await _aleave_open(pool, form, start)
            cursors.clear()
            gc.collect()
        async with pool.connection() as conn:
            cur = await conn.cursor()
            async with cur.begin():
                await cur.execute(f"INSERT INTO {table} VALUES (2)")
            await cur.execute(f"SELECT x FROM {table} ORDER BY x")
            rows = await cur.fetchall()
        assert [r[0] for r in rows] == _expected(form)
        assert pool.stats().connections_created == 1
