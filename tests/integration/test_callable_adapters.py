"""Options a callable's adapter cannot honour are dealt with at the first connect.

A pool built from a connect callable learns which library it wraps from its
first connection. ``query_timeout`` on connections the adapter cannot abort
(sqlite3, mysqlclient opened by the application) gives one
:class:`~poolkeeper.PoolWarning` (the watchdog cannot cut a call short),
instead of a failed abort logged per stuck checkout. ``reset="full"`` where
the adapter has no full session reset (mysqlclient without the credentials, a
generic DB-API driver) is refused: the connect fails with ConfigError, which
callers get at once, instead of every returned connection being closed.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from typing import Any

import pytest

import poolkeeper
from poolkeeper._config import parse_url
from tests.conftest import import_driver
from tests.support.generic_dbapi import generic_connect

pytestmark = [pytest.mark.integration]


def _use(pool: poolkeeper.Pool[Any], times: int = 3) -> None:
    for _ in range(times):
        with pool.connection(timeout=5) as conn:
            cur = conn.cursor()
            cur.execute("SELECT 1")
            cur.fetchall()
            cur.close()


def _mysqldb_connect(request: pytest.FixtureRequest) -> Any:
    mysqldb = import_driver(request.config, "MySQLdb")
    url = parse_url(request.getfixturevalue("mysql_url"))
    return lambda: mysqldb.connect(
        host=url.host or "127.0.0.1",
        port=url.port or 3306,
        user=url.username or "root",
        password=url.password or "",
        database=url.database or "test",
    )


def _hold_past_query_timeout(pool: poolkeeper.Pool[Any], sql: str) -> None:
    with pool.connection() as conn:
        cur = conn.cursor()
        cur.execute(sql)
        cur.fetchall()
        cur.close()
        time.sleep(0.3)  # past query_timeout: marked stuck, nothing to cut short


def _run_with_query_timeout(connect: Any, sql: str, lost: bool) -> None:
    with poolkeeper.Pool(connect, min_size=1, max_size=2, query_timeout=0.05) as pool:
        pool.open(wait=True)
        if lost:
            # Its transaction state is unknown (mysqlclient): the normal exit
            # of a block marked stuck cannot promise a commit.
            with pytest.raises(poolkeeper.QueryTimeout):
                _hold_past_query_timeout(pool, sql)
        else:
            _hold_past_query_timeout(pool, sql)
        _use(pool)


def _sqlite_connect() -> sqlite3.Connection:
    return sqlite3.connect(":memory:", check_same_thread=False)


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("sqlite3", marks=pytest.mark.sqlite),
        pytest.param("mysqldb", marks=pytest.mark.mysql),
    ],
)
def test_query_timeout_on_a_callable_that_cannot_abort_is_said_once(
    request, caplog, kind
) -> None:
    caplog.set_level(logging.WARNING, logger="poolkeeper")
    if kind == "sqlite3":
        connect, sql, lost = _sqlite_connect, "SELECT 1", False
    else:
        connect, sql, lost = _mysqldb_connect(request), "SELECT 1", True
    with pytest.warns(poolkeeper.PoolWarning) as said:
        _run_with_query_timeout(connect, sql, lost)
    # (A bare sqlite3 connection also gets the "with pool.acquire()" warning.)
    messages = [
        str(w.message) for w in said if "with pool.acquire()" not in str(w.message)
    ]
    assert len(messages) == 1 and "cannot cut a stuck command" in messages[0]
    assert not any("could not abort" in r.getMessage() for r in caplog.records)


@pytest.mark.mysql
@pytest.mark.parametrize("kind", ["mysqldb", "generic"])
def test_full_reset_on_a_callable_without_one_is_refused_at_first_connect(
    request, kind
) -> None:
    if kind == "mysqldb":
        connect = _mysqldb_connect(request)
    else:
        import_driver(request.config, "pymysql")
        connect = generic_connect("pymysql", request.getfixturevalue("mysql_url"))
    pool = poolkeeper.Pool(connect, min_size=0, max_size=1, reset="full", timeout=10)
    with pool:
        started = time.monotonic()
        with pytest.raises(
            poolkeeper.ConfigError, match="reset='full' is not supported"
        ):
            _use(pool, 1)
        # At once (retrying cannot help), not after the 10 s timeout, and
        # the refused connection was closed.
        assert time.monotonic() - started < 2.0
        stats = pool.stats()
        assert stats.size == 0 and stats.connections_created == 0
