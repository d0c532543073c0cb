"""CPU cost of waiting in an AsyncPool: per hand-off with W waiters, and per cancellation.

Wall-clock figures (``scale.py``) swing 2-3x on a shared 2-core machine; this
script reports the *process CPU time* instead, which other processes disturb
much less, so two builds can be compared by running it once on each, in
alternation (``PYTHONPATH=...`` pointing at either source tree):

1. ``scale.py``'s asyncio cycle (a pool of 4, 4 + W tasks looping acquire,
   yield, release, ``fair=True``) with ``time.process_time`` as its clock,
   next to the same loop over ``asyncio.Queue``: CPU ns per cycle and the
   ratio to the queue.
2. A cancellation storm: W tasks wait on a pool whose one connection is
   taken, and every one but the first and the last is cancelled, newest
   first (each from the middle of the queue): CPU ms for all of them.

Example::

    PYTHONPATH=src python benchmarks/waiter_cost.py 10 10000
"""

from __future__ import annotations

import asyncio
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import poolkeeper
import scale


async def cancel_storm(waiters: int) -> float:
    """CPU seconds to cancel ``waiters - 2`` waiters from the middle of the queue."""
    pool = poolkeeper.AsyncPool(
        "sqlite+aiosqlite:///:memory:", min_size=1, max_size=1, timeout=600
    )
    await pool.open(wait=True)
    held = await pool.acquire()
    tasks = [asyncio.ensure_future(pool.acquire()) for _ in range(waiters)]
    while pool.stats().waiting < waiters:  # noqa: ASYNC110 - polling the pool
        await asyncio.sleep(0.01)
    started = time.process_time()
    for task in reversed(tasks[1:-1]):
        task.cancel()
    await asyncio.gather(*tasks[1:-1], return_exceptions=True)
    elapsed = time.process_time() - started
    assert pool.stats().waiting == 2
    await pool.release(held)
    for task in (tasks[0], tasks[-1]):
        await pool.release(await task)
    await pool.close()
    return elapsed


def main() -> int:
    warnings.simplefilter("ignore")
    counts = [int(a) for a in sys.argv[1:]] or [10, 10000]
    scale.time.perf_counter = time.process_time  # type: ignore[attr-defined]
    print("| W | pool CPU ns/cycle | asyncio.Queue | ratio | cancel W-2 waiters |")
    print("|---|---|---|---|---|")
    for w in counts:
        pool_ns = asyncio.run(scale._async_cycles(w, 1.0, "poolkeeper"))
        queue_ns = asyncio.run(scale._async_cycles(w, 1.0, "queue"))
        storm = asyncio.run(cancel_storm(w))
        print(
            f"| {w:,} | {pool_ns:,.0f} | {queue_ns:,.0f} | "
            f"{pool_ns / queue_ns:.2f}x | {storm * 1e3:,.0f} ms |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
