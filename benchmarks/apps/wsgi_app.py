"""A threaded WSGI app (gunicorn ``gthread``, one worker) over a psycopg 3 pool.

``BENCH_POOL`` picks the pool; the handlers are the same code for every pool
of a family:

* psycopg family (``psycopg_pool``, ``pk-psycopg``): ``with pool.connection()
  as conn`` and psycopg 3's ``execute`` / ``transaction()``; both pools commit
  an open transaction on the way out.
* SQLAlchemy family (``sqlalchemy``, ``pk-sqlalchemy``): ``create_engine`` over
  psycopg 3 with SQLAlchemy's ``QueuePool`` or poolkeeper's
  ``poolkeeper.integrations.sqlalchemy.Pool`` as ``poolclass``.

Every pool is static at ``BENCH_POOL_SIZE`` connections (default 20), filled
when the worker imports this module, and names its sessions ``BENCH_APPNAME``.
Routes as in ``asgi_app.py``: ``/query``, ``/tx``, ``/health``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
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


class PsycopgFamily:
    """Handlers over a psycopg-style pool: ``connection()`` yields a Connection."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    def query(self, n: int) -> int:
        with self.pool.connection() as conn:
            row = conn.execute(PG_FIRST, (n,)).fetchone()
        return int(row[0])

    def tx(self, n: int) -> int:
        with self.pool.connection() as conn, conn.transaction():
            a = conn.execute(PG_FIRST, (n,)).fetchone()[0]
            b = conn.execute(PG_SECOND, (a,)).fetchone()[0]
        return int(b)


class SqlalchemyFamily:
    """Handlers over an ``Engine``."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.q1, self.q2 = sqlalchemy_statements()

    def query(self, n: int) -> int:
        with self.engine.connect() as conn:
            value: int = conn.execute(self.q1, {"n": n}).scalar_one()
        return value

    def tx(self, n: int) -> int:
        with self.engine.begin() as conn:
            a = conn.execute(self.q1, {"n": n}).scalar_one()
            b: int = conn.execute(self.q2, {"n": a}).scalar_one()
        return b


def open_pool() -> Any:
    """Open the pool ``BENCH_POOL`` names, filled to its size."""
    if POOL == "psycopg_pool":
        from psycopg_pool import ConnectionPool

        pp = ConnectionPool(
            DSN,
            min_size=SIZE,
            max_size=SIZE,
            kwargs={"application_name": APPNAME},
            open=False,
        )
        pp.open(wait=True, timeout=30)
        return PsycopgFamily(pp)
    if POOL == "pk-psycopg":
        import poolkeeper

        pk: poolkeeper.Pool[Any] = poolkeeper.Pool(
            DSN.replace("postgresql://", "postgresql+psycopg://", 1),
            min_size=SIZE,
            max_size=SIZE,
            connect_args={"application_name": APPNAME},
        )
        pk.open(wait=True, timeout=30)
        return PsycopgFamily(pk)
    if POOL in ("sqlalchemy", "pk-sqlalchemy"):
        from sqlalchemy import create_engine

        extra: dict[str, Any] = {}
        if POOL == "pk-sqlalchemy":
            from poolkeeper.integrations.sqlalchemy import Pool

            extra["poolclass"] = Pool
        engine = create_engine(
            DSN.replace("postgresql://", "postgresql+psycopg://", 1),
            pool_size=SIZE,
            max_overflow=0,
            connect_args={"application_name": APPNAME},
            **extra,
        )
        conns = [engine.connect() for _ in range(SIZE)]
        for conn in conns:
            conn.close()
        return SqlalchemyFamily(engine)
    raise SystemExit(f"unknown BENCH_POOL {POOL!r}")


FAMILY = open_pool()

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """Route ``/query``, ``/tx`` and ``/health``."""
    path = environ.get("PATH_INFO", "/")
    if path in ("/query", "/tx"):
        body = str(getattr(FAMILY, path[1:])(random.randrange(1000))).encode()
    elif path == "/health":
        body = b"ok"
    else:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found"]
    start_response(
        "200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
    )
    return [body]
