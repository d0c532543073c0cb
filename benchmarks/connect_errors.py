"""Measure what a caller sees, and after how long, when connects fail.

For each driver, a fresh pool (``min_size=0``, ``timeout=5``) gets one
``acquire()`` against: a loopback port nothing listens on, a wrong password
(a private PostgreSQL cluster with ``scram-sha-256``, ``tests/support/pgcluster.py``;
a MariaDB user created for the run), and an unknown database (sqlite: a file in
a directory that does not exist), and for PostgreSQL ``sslmode=require``
against the plain-text local server. The table printed gives the exception's type,
the first line of its message and the seconds until it was raised.

Example::

    PYTHONPATH=src:. python benchmarks/connect_errors.py [--timeout 5]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import tempfile
import time
import uuid

from tests.support.passwords import mysql_admin, require_password
from tests.support.pgcluster import PgCluster

import poolkeeper

DRIVERS = [
    ("psycopg", "postgresql+psycopg", False),
    ("psycopg (async)", "postgresql+psycopg", True),
    ("psycopg2", "postgresql+psycopg2", False),
    ("asyncpg", "postgresql+asyncpg", True),
    ("aiopg", "postgresql+aiopg", True),
    ("pymysql", "mysql+pymysql", False),
    ("aiomysql", "mysql+aiomysql", True),
    ("mysqldb", "mysql+mysqldb", False),
    ("sqlite3", "sqlite", False),
    ("aiosqlite", "sqlite+aiosqlite", True),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def one(url: str, is_async: bool, timeout: float) -> tuple[str, float]:
    """Acquire once from a new pool; return what was raised and when."""
    started = time.monotonic()
    try:
        if is_async:
            async with poolkeeper.AsyncPool(url, min_size=0, timeout=timeout) as ap:
                await ap.release(await ap.acquire())
        else:
            with poolkeeper.Pool(url, min_size=0, timeout=timeout) as pool:
                pool.release(pool.acquire())
    except Exception as exc:
        lines = str(exc).strip().splitlines() or [""]
        kind = f"{type(exc).__module__.partition('.')[0]}.{type(exc).__qualname__}"
        return f"`{kind}`: {lines[0][:90]}", time.monotonic() - started
    return "connected", time.monotonic() - started


def scram_cluster() -> PgCluster:
    cluster = PgCluster(max_connections=20).start()
    require_password(cluster, "pk_scram", "right")
    return cluster


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args()
    admin = mysql_admin("mysql://root@127.0.0.1:3306/test")
    user = f"pk_pw_{uuid.uuid4().hex[:8]}"
    with admin.cursor() as cur:
        cur.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'right'")
    cluster = scram_cluster()
    tmp = tempfile.mkdtemp()
    try:
        print("| driver | case | caller sees | after (s) |")
        print("|---|---|---|---|")
        for name, scheme, is_async in DRIVERS:
            if scheme.startswith("sqlite"):
                cases = {"unknown database": f"{scheme}:///{tmp}/missing/db.sqlite"}
            elif scheme.startswith("postgresql"):
                cases = {
                    "refused port": f"{scheme}://postgres@127.0.0.1:{free_port()}/test",
                    "bad password": f"{scheme}://pk_scram:wrong@127.0.0.1:"
                    f"{cluster.port}/postgres",
                    "unknown database": f"{scheme}://postgres@127.0.0.1:5432/nope_db",
                    "TLS required, plain-text server": f"{scheme}://postgres@"
                    "127.0.0.1:5432/test?sslmode=require",
                }
            else:
                cases = {
                    "refused port": f"{scheme}://root@127.0.0.1:{free_port()}/test",
                    "bad password": f"{scheme}://{user}:wrong@127.0.0.1:3306/test",
                    "unknown database": f"{scheme}://root@127.0.0.1:3306/nope_db",
                }
            for case, url in cases.items():
                seen, took = await one(url, is_async, args.timeout)
                print(f"| {name} | {case} | {seen} | {took:.2f} |")
                sys.stdout.flush()
    finally:
        cluster.destroy()
        with admin.cursor() as cur:
            cur.execute(f"DROP USER IF EXISTS '{user}'@'%'")
        admin.close()


if __name__ == "__main__":
    asyncio.run(main())
