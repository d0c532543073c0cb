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
- ``poolkeeper``: ``Pool.acquire()`` / ``Pool.release()`` and ``with
  pool.connection()``, same driver.

If ``floor`` is already slower than ``psycopg2``, no pure-Python pool that
keeps the contract's per-checkout bookkeeping can meet the target; the gap
between ``floor`` and ``poolkeeper`` is what poolkeeper's own design costs.

Example::

    PYTHONPATH=src python benchmarks/floor_sync.py --rounds 5
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cycles", type=int, default=200_000)
    args = parser.parse_args(argv)

    threaded = psycopg2.pool.ThreadedConnectionPool(4, 4, args.dsn)
    floor = FloorPool([psycopg2.connect(args.dsn) for _ in range(4)])
    bare = FloorPool([psycopg2.connect(args.dsn) for _ in range(4)], stats=False)
    url = "postgresql+psycopg2://" + args.dsn.partition("://")[2]
    pool: Any = poolkeeper.Pool(url, min_size=4, max_size=4)
    pool.open(wait=True, timeout=30.0)

    def psycopg2_cycle() -> None:
        threaded.putconn(threaded.getconn())

    def floor_cycle() -> None:
        floor.release(floor.acquire())

    def bare_cycle() -> None:
        bare.release(bare.acquire())

    def pk_cycle() -> None:
        pool.release(pool.acquire())

    def pk_with_cycle() -> None:
        with pool.connection():
            pass

    forms: dict[str, Callable[[], None]] = {
        "psycopg2": psycopg2_cycle,
        "floor": floor_cycle,
        "floor-no-stats": bare_cycle,
        "poolkeeper acquire/release": pk_cycle,
        "poolkeeper with": pk_with_cycle,
    }
    samples: dict[str, list[float]] = {name: [] for name in forms}
    names = list(forms)
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            seconds = timeit.timeit(forms[name], number=args.cycles)
            samples[name].append(seconds / args.cycles * 1e9)
    pool.close()
    threaded.closeall()

    base = statistics.median(samples["psycopg2"])
    print(
        f"acquire + release, 1 thread, psycopg2 connections; "
        f"median of {args.rounds} interleaved rounds of {args.cycles:,} cycles"
    )
    print(f"{'form':28} {'ns/cycle':>9} {'speed vs psycopg2':>18}")
    for name in names:
        ns = statistics.median(samples[name])
        print(f"{name:28} {ns:9.0f} {base / ns:17.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
