"""How fast can a pure-Python pool with poolkeeper's bookkeeping be?

Issue 3 asks the sync connection cycle (acquire + release, one thread) to be no
slower than psycopg2's ``ThreadedConnectionPool``. This script measures, in
one process and interleaved, over the same psycopg2 connections:

- ``psycopg2``: ``ThreadedConnectionPool.getconn()`` / ``putconn()``;
- ``floor``: the smallest pure-Python pool that still does, per cycle, what
  poolkeeper's contract asks of every checkout: two monotonic clock reads,
  a lifetime check, the ``uses`` and ``acquires`` counters, and the use-time
  summary behind ``stats()`` (count, total, maximum, a 1024-sample ring), a
  transaction-status probe on return, one lock per side. No waiting, no
  validation window, no events, no hooks: the floor, not a pool;
- ``floor-no-stats``: the same without the clock reads and the summary;
- ``dbutils``: DBUtils' ``PooledDB`` (``connection()`` / ``close()``),
  blocking when empty, ``reset=False`` (no rollback round trip on return:
  like poolkeeper, it then rolls back only what it knows to be open);
- ``poolkeeper``: ``Pool.acquire()`` / ``Pool.release()`` and ``with
  pool.connection()``, same driver (``--psycopg`` adds both forms over
  psycopg 3 connections).

``--threads`` and ``--sizes`` make a grid: each cell is one interleaved run
(every contender, rotating order, ``--rounds`` times) of ``threads`` threads
sharing one pool of ``size`` connections; ``cycles`` is the total over the
threads. psycopg2's pool does not wait (it raises when empty), so with more
threads than connections it gets a semaphore of ``size`` in front, as in
``bench_pools.py``; the floors never wait and run only with threads <= size.

If ``floor`` is already slower than ``psycopg2``, no pure-Python pool that
keeps the contract's per-checkout bookkeeping can meet the target; the gap
between ``floor`` and ``poolkeeper`` is what poolkeeper's own design costs.

Example::

    PYTHONPATH=src python benchmarks/floor_sync.py --rounds 5
    PYTHONPATH=src python benchmarks/floor_sync.py --threads 1,8 --sizes 4,16 --psycopg
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import timeit
from collections import deque
from collections.abc import Callable
from typing import Any

import psycopg2
import psycopg2.pool
from dbutils.pooled_db import PooledDB

import poolkeeper

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
_monotonic = time.monotonic


class _Entry:
    __slots__ = ("checked_out_at", "conn", "expires_at", "key", "last_used_at", "uses")

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.key = id(conn)
        self.expires_at = float("inf")
        self.checked_out_at = 0.0
        self.last_used_at = 0.0
        self.uses = 0


class FloorPool:
    """The per-checkout bookkeeping of poolkeeper's contract, and nothing else."""

    def __init__(self, conns: list[Any], stats: bool = True) -> None:
        self.lock = threading.Lock()
        self.idle = deque(_Entry(c) for c in conns)
        self.in_use: dict[int, _Entry] = {}
        self.acquires = 0
        self.count = 0
        self.total = 0.0
        self.max = 0.0
        self.ring = [0.0] * 1024
        self.i = 0
        if not stats:
            self.acquire = self._acquire_bare  # type: ignore[method-assign]
            self.release = self._release_bare  # type: ignore[method-assign]

    def acquire(self) -> Any:
        now = _monotonic()
        with self.lock:
            idle = self.idle
            if idle:
                entry = idle[-1]
                if entry.expires_at > now:
                    del idle[-1]
                    entry.checked_out_at = now
                    entry.uses += 1
                    self.in_use[entry.key] = entry
                    self.acquires += 1
                    return entry.conn
        raise RuntimeError("the floor pool never waits")

    def release(self, conn: Any) -> None:
        entry = self.in_use.get(id(conn))
        if entry is None or conn.info.transaction_status != 0:
            raise RuntimeError("the floor pool only takes back idle connections")
        now = _monotonic()
        with self.lock:
            del self.in_use[entry.key]
            held = now - entry.checked_out_at
            self.count += 1
            self.total += held
            if held > self.max:
                self.max = held
            self.ring[self.i & 1023] = held
            self.i += 1
            entry.last_used_at = now
            self.idle.append(entry)

    def _acquire_bare(self) -> Any:
        with self.lock:
            entry = self.idle.pop()
            self.in_use[entry.key] = entry
            return entry.conn

    def _release_bare(self, conn: Any) -> None:
        entry = self.in_use.get(id(conn))
        if entry is None or conn.info.transaction_status != 0:
            raise RuntimeError("the floor pool only takes back idle connections")
        with self.lock:
            del self.in_use[entry.key]
            self.idle.append(entry)


def timed(cycle: Callable[[], None], threads: int, cycles: int) -> float:
    """Nanoseconds per cycle of ``threads`` threads sharing ``cycles`` cycles."""
    if threads == 1:
        return timeit.timeit(cycle, number=cycles) / cycles * 1e9
    each = cycles // threads
    barrier = threading.Barrier(threads + 1)

    def work() -> None:
        barrier.wait()
        for _ in range(each):
            cycle()

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    barrier.wait()
    started = time.perf_counter()
    for worker in workers:
        worker.join()
    return (time.perf_counter() - started) / (each * threads) * 1e9


def contenders(
    dsn: str, size: int, threads: int, psycopg: bool, closers: list[Callable[[], Any]]
) -> dict[str, Callable[[], None]]:
    """The cycle of each contender over a pool of ``size`` connections."""
    threaded = psycopg2.pool.ThreadedConnectionPool(size, size, dsn)
    closers.append(threaded.closeall)
    gate = threading.BoundedSemaphore(size)
    dbutils = PooledDB(
        psycopg2,
        mincached=size,
        maxcached=size,
        maxconnections=size,
        blocking=True,
        reset=False,
        dsn=dsn,
    )
    closers.append(dbutils.close)
    url = "postgresql+psycopg2://" + dsn.partition("://")[2]
    pool: Any = poolkeeper.Pool(url, min_size=size, max_size=size)
    pool.open(wait=True, timeout=30.0)
    closers.append(pool.close)

    def psycopg2_cycle() -> None:
        threaded.putconn(threaded.getconn())

    def psycopg2_gated_cycle() -> None:
        with gate:
            threaded.putconn(threaded.getconn())

    def dbutils_cycle() -> None:
        dbutils.connection().close()

    forms: dict[str, Callable[[], None]] = {
        "psycopg2": psycopg2_cycle if threads <= size else psycopg2_gated_cycle,
        "dbutils": dbutils_cycle,
    }
    if threads <= size:
        # psycopg2's pool's connections: the contenders run one at a time, and
        # each gives every connection back (the server's slots are shared
        # with other work).
        conns = [threaded.getconn() for _ in range(size)]
        for conn in conns:
            threaded.putconn(conn)
        floor = FloorPool(conns)
        bare = FloorPool(conns, stats=False)
        forms["floor"] = lambda: floor.release(floor.acquire())
        forms["floor-no-stats"] = lambda: bare.release(bare.acquire())
    pools = [("", pool)]
    if threads > size:
        # Barging instead of FIFO hand-off, as the semaphore-gated psycopg2
        # pool and DBUtils do.
        unfair: Any = poolkeeper.Pool(url, min_size=size, max_size=size, fair=False)
        unfair.open(wait=True, timeout=30.0)
        closers.append(unfair.close)
        pools.append((" fair=False", unfair))
    if psycopg:
        url3 = "postgresql+psycopg://" + dsn.partition("://")[2]
        pool3: Any = poolkeeper.Pool(url3, min_size=size, max_size=size)
        pool3.open(wait=True, timeout=30.0)
        closers.append(pool3.close)
        pools.append((" psycopg", pool3))
    for suffix, each in pools:
        acquire, release, connection = each.acquire, each.release, each.connection

        def pk_cycle(acquire: Any = acquire, release: Any = release) -> None:
            release(acquire())

        def pk_with_cycle(connection: Any = connection) -> None:
            with connection():
                pass

        forms[f"poolkeeper acquire/release{suffix}"] = pk_cycle
        forms[f"poolkeeper with{suffix}"] = pk_with_cycle
    return forms


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cycles", type=int, default=200_000)
    parser.add_argument("--threads", default="1", help="comma-separated, e.g. 1,8")
    parser.add_argument("--sizes", default="4", help="pool sizes, e.g. 4,16")
    parser.add_argument(
        "--psycopg", action="store_true", help="also poolkeeper over psycopg 3"
    )
    args = parser.parse_args(argv)
    grid = [
        (int(t), int(n)) for t in args.threads.split(",") for n in args.sizes.split(",")
    ]
    print(
        f"connection cycle, psycopg2 connections unless noted; median of "
        f"{args.rounds} interleaved rounds of {args.cycles:,} cycles per cell"
    )
    for threads, size in grid:
        closers: list[Callable[[], Any]] = []
        try:
            forms = contenders(args.dsn, size, threads, args.psycopg, closers)
            samples: dict[str, list[float]] = {name: [] for name in forms}
            names = list(forms)
            for r in range(args.rounds):
                for name in names[r % len(names) :] + names[: r % len(names)]:
                    samples[name].append(timed(forms[name], threads, args.cycles))
        finally:
            for close in reversed(closers):
                close()
        medians = {name: statistics.median(v) for name, v in samples.items()}
        print(f"\n{threads} thread(s), pool of {size}")
        print(f"{'form':34} {'ns/cycle':>9} {'vs psycopg2':>12} {'vs dbutils':>11}")
        for name in names:
            ns = medians[name]
            print(
                f"{name:34} {ns:9.0f} {medians['psycopg2'] / ns:11.2f}x "
                f"{medians['dbutils'] / ns:10.2f}x"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
