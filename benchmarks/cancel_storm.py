"""Count the connections a storm of cancelled tasks costs, per asyncio driver.

Each of N tasks (default 10,000) runs ``async with pool.connection(timeout=1)``
plus a 1 ms sleep on the server (``SELECT pg_sleep(0.001)``, ``SELECT
SLEEP(0.001)`` on MariaDB) against a pool of ``max_size`` 4. Half of them run
under ``asyncio.wait_for`` with a random 0-6 ms limit, the other half are
``task.cancel()``-ed after a random 0-6 ms, so cancellations land everywhere: in
the wait for a connection, in the query, in the commit on the way out. At the
end the pool's ``stats()`` say how many connections were created and closed
(and why); asyncpg's own pool is measured the same way, for reference (its
connects counted by wrapping ``asyncpg.connect``). A driver that recovers a
connection whose query was cancelled (a cancel request, then a rollback)
creates no more than ``max_size`` connections.

With ``--in-transaction`` the asyncpg rows' query opens a transaction first
(``BEGIN; SELECT pg_sleep(0.001)``; asyncpg runs in autocommit otherwise),
which the pool commits on the way out: cancellations then also land in the
pool's own commit or rollback.

Examples::

    PYTHONPATH=src python benchmarks/cancel_storm.py
    PYTHONPATH=src python benchmarks/cancel_storm.py -n 2000 --only psycopg aiomysql
    PYTHONPATH=src python benchmarks/cancel_storm.py --in-transaction --only asyncpg
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import poolkeeper

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.storm import QUERIES, cancel_storm

PG = "postgresql+{driver}://postgres@127.0.0.1:5432/test"
MY = "mysql+aiomysql://root@127.0.0.1:3306/test"
MAX_SIZE = 4

#: name -> pool URL
TARGETS = {
    "psycopg": PG.format(driver="psycopg"),
    "asyncpg": PG.format(driver="asyncpg"),
    "aiopg": PG.format(driver="aiopg"),
    "aiomysql": MY,
    "aiosqlite": "sqlite+aiosqlite:///" + tempfile.gettempdir() + "/cancel_storm.db",
}


async def _in_transaction(conn: Any) -> None:
    await conn.execute("BEGIN; SELECT pg_sleep(0.001)")


#: name -> the query of --in-transaction, where it differs.
TX_QUERIES = {"asyncpg": _in_transaction}
_queries = dict(QUERIES)


async def run_poolkeeper(name: str, n: int, seed: int) -> dict[str, Any]:
    url, query = TARGETS[name], _queries[name]
    pool: poolkeeper.AsyncPool[Any] = poolkeeper.AsyncPool(
        url, min_size=0, max_size=MAX_SIZE, timeout=1
    )
    async with pool:
        started = time.perf_counter()
        outcomes = await cancel_storm(
            lambda: pool.connection(timeout=1), query, n, random.Random(seed)
        )
        took = time.perf_counter() - started
        # Background closes (a discarded connection) finish before counting.
        await asyncio.sleep(0.2)
        # The pool still works afterwards.
        async with pool.connection(timeout=2) as conn:
            await query(conn)
        stats = pool.stats()
    reasons = {k: v for k, v in stats.closed_by_reason.items() if v}
    return {
        "pool": f"poolkeeper/{name}",
        "created": stats.connections_created,
        "closed": stats.connections_closed,
        "reasons": reasons,
        "seconds": round(took, 2),
        **outcomes,
    }


async def run_asyncpg_pool(n: int, seed: int) -> dict[str, Any]:
    import asyncpg

    created = 0

    async def connect(*args: Any, **kwargs: Any) -> Any:
        nonlocal created
        created += 1
        return await asyncpg.connect(*args, **kwargs)

    pool = await asyncpg.create_pool(
        "postgresql://postgres@127.0.0.1:5432/test",
        min_size=0,
        max_size=MAX_SIZE,
        connect=connect,
    )
    async with pool:
        started = time.perf_counter()
        outcomes = await cancel_storm(
            lambda: pool.acquire(timeout=1), _queries["asyncpg"], n, random.Random(seed)
        )
        took = time.perf_counter() - started
    return {
        "pool": "asyncpg.create_pool",
        "created": created,
        "closed": "-",
        "reasons": {},
        "seconds": round(took, 2),
        **outcomes,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=10_000, help="tasks per driver")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--in-transaction",
        action="store_true",
        help="asyncpg rows: the query opens a transaction the pool ends",
    )
    parser.add_argument(
        "--only", nargs="*", default=[*TARGETS, "asyncpg-pool"], help="what to run"
    )
    args = parser.parse_args()
    if args.in_transaction:
        _queries.update(TX_QUERIES)
    rows = []
    for name in args.only:
        if name == "asyncpg-pool":
            rows.append(await run_asyncpg_pool(args.n, args.seed))
        else:
            rows.append(await run_poolkeeper(name, args.n, args.seed))
        print(rows[-1], flush=True)
    print()
    print(f"{args.n} tasks, max_size {MAX_SIZE}")
    print(
        "| pool | created | closed | closed by reason | ok | cancelled | timeout | error |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        reasons = ", ".join(f"{k} {v}" for k, v in r["reasons"].items()) or "-"
        print(
            f"| {r['pool']} | {r['created']} | {r['closed']} | {reasons} "
            f"| {r['ok']} | {r['cancelled']} | {r['timeout']} | {r['error']} |"
        )


if __name__ == "__main__":
    asyncio.run(main())
