"""Measure how poolkeeper behaves, and how fast it recovers, under server faults.

Every scenario runs against a private PostgreSQL 15 cluster started with
``pg_ctl`` on a free loopback port (``tests/support/pgcluster.py``), some of
them through the TCP fault proxy (``tests/support/faultproxy.py``). Worker
threads (or asyncio tasks) loop acquire -> query -> release while a fault is
injected and lifted; the script then reports, per scenario and run:

- ``in_use``: connections checked out at the instant the server sessions died
  (taken as the first error any caller saw; for faults without errors, the
  ``stats().in_use`` sampled when the fault was injected);
- ``errors``: driver errors seen by callers, and how many of those came from
  a connection handed out after that instant (``stale``: a dead connection
  the pool should not have handed out) rather than one already in use;
- ``timeouts``: ``PoolTimeout`` raised to callers;
- ``max_wait``: the longest acquire (successful or not) against the timeout;
- ``first_ok``: seconds from the fault being lifted (server started again,
  proxy back to pass) to the first successful checkout;
- ``refill``: seconds from the fault being lifted until the pool holds
  ``min_size`` connections again (``-``: it never dropped below);
- ``leak``: ``stats().size - backends`` once the load stopped and settled,
  plus connections still counted in use or waiting (all 0 when nothing leaked).

Examples::

    PYTHONPATH=src python benchmarks/recovery.py
    PYTHONPATH=src python benchmarks/recovery.py --repeat 5 --only restart
    PYTHONPATH=src python benchmarks/recovery.py --json results.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg

import poolkeeper

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.faultproxy import FaultProxy
from tests.support.pgcluster import PgCluster

T = 1.0  # acquire timeout in every scenario
RECONNECT_MAX = 0.5  # longest reconnect backoff step
QUERY_TIMEOUT = 1.0  # query_timeout of the scenarios that set it
OK, TIMEOUT, ERROR = "ok", "timeout", "error"


@dataclass
class Op:
    """One acquire -> query -> release by a worker."""

    started: float
    acquired: float | None
    ended: float
    outcome: str


@dataclass
class Result:
    """The measured numbers of one scenario run (see the module docstring)."""

    scenario: str
    in_use: int = 0
    errors: int = 0
    stale: int = 0
    timeouts: int = 0
    ops: int = 0
    max_wait: float = 0.0
    first_ok: float | None = None
    refill: float | None = None
    leak: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def new_app() -> str:
    return f"pk-rec-{uuid.uuid4().hex[:8]}"


class Load:
    """Worker threads looping acquire -> query -> release, recording each op."""

    def __init__(
        self, pool: poolkeeper.Pool[Any], workers: int, pause: float = 0.01
    ) -> None:
        self.pool = pool
        self.workers = workers
        self.pause = pause
        self.ops: list[Op] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            acquired = None
            outcome = OK
            try:
                with self.pool.connection() as conn:
                    acquired = time.monotonic()
                    conn.execute("SELECT 1").fetchall()
            except poolkeeper.PoolTimeout:
                outcome = TIMEOUT
            except (psycopg.Error, poolkeeper.QueryTimeout):
                outcome = ERROR
            with self._lock:
                self.ops.append(Op(started, acquired, time.monotonic(), outcome))
            time.sleep(self.pause)

    def __enter__(self) -> Load:
        for _ in range(self.workers):
            thread = threading.Thread(target=self._run, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)


class SizeWatch:
    """Samples ``stats().size`` every 5 ms to time the refill to ``min_size``."""

    def __init__(self, pool: poolkeeper.Pool[Any] | poolkeeper.AsyncPool[Any]) -> None:
        self.pool = pool
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.samples.append((time.monotonic(), self.pool.stats().size))

    def __enter__(self) -> SizeWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def refill(self, since: float, min_size: int) -> float | None:
        """Seconds from ``since`` until size >= min_size for good."""
        after = [(t, s) for t, s in self.samples if t >= since]
        if not after:
            return None
        if all(s >= min_size for _, s in after):
            return 0.0  # full again before `since` (or between two samples)
        short = max(t for t, s in after if s < min_size)
        full = [t for t, s in after if t > short]
        return (full[0] - since) if full else float("inf")


def summarize(
    result: Result, ops: list[Op], fault_at: float, back_at: float | None
) -> None:
    """Fill ``result`` from the ops; errors are classified around the kill instant.

    The server does not die at ``fault_at`` (``pg_ctl`` takes a while to
    signal it), so the first error a caller saw stands for the instant the
    sessions died. ``in_use`` counts ops holding a connection at that
    instant (give or take 2 ms); ``stale`` counts errors on connections
    handed out more than 2 ms after it, i.e. connections that were already
    dead when the pool handed them out.
    """
    result.ops = len(ops)
    failed = [op for op in ops if op.outcome == ERROR and op.ended >= fault_at]
    result.errors = len(failed)
    if failed:
        killed_at = min(op.ended for op in failed)
        result.in_use = sum(
            op.acquired is not None
            and op.acquired <= killed_at + 0.002
            and op.ended >= killed_at
            for op in ops
        )
        result.stale = sum(
            op.acquired is not None and op.acquired > killed_at + 0.002 for op in failed
        )
    result.timeouts = sum(op.outcome == TIMEOUT for op in ops)
    result.max_wait = max(
        ((op.acquired or op.ended) - op.started for op in ops), default=0.0
    )
    if back_at is not None:
        served = [
            op.acquired
            for op in ops
            if op.outcome == OK and op.acquired is not None and op.acquired >= back_at
        ]
        result.first_ok = (min(served) - back_at) if served else None


def settle_leak(
    pool: poolkeeper.Pool[Any] | poolkeeper.AsyncPool[Any],
    cluster: PgCluster,
    app: str,
    within: float = 3.0,
) -> int:
    """Wait for the pool to settle; return size/backend mismatch + in use + waiting."""
    deadline = time.monotonic() + within
    while True:
        stats = pool.stats()
        leak = abs(stats.size - cluster.backends(app)) + stats.in_use + stats.waiting
        if (leak == 0 and stats.connecting == 0) or time.monotonic() > deadline:
            return leak
        time.sleep(0.02)


# -- scenarios -------------------------------------------------------------------


def restart(cluster: PgCluster, mode: str, check: bool) -> Result:
    """Stop the server (fast or immediate) under load, 2 s down, start it again."""
    app = new_app()
    result = Result(f"restart-{mode}{'+check' if check else ''}")
    hook = (lambda conn: conn.execute("SELECT 1")) if check else None
    with poolkeeper.Pool(
        cluster.url(application_name=app, connect_timeout=2),
        min_size=4,
        max_size=4,
        timeout=T,
        reconnect_max=RECONNECT_MAX,
        check=hook,
    ) as pool:
        pool.open(wait=True)
        with SizeWatch(pool) as watch, Load(pool, workers=8) as load:
            time.sleep(0.5)
            result.in_use = pool.stats().in_use
            fault_at = time.monotonic()
            cluster.stop(mode)  # type: ignore[arg-type]
            time.sleep(2.0)
            cluster.start()
            back_at = time.monotonic()
            time.sleep(3.0)
        summarize(result, load.ops, fault_at, back_at)
        result.refill = watch.refill(back_at, 4)
        result.leak = settle_leak(pool, cluster, app)
    return result


def terminate_all(cluster: PgCluster, check: bool) -> Result:
    """``pg_terminate_backend`` every session of the pool under load."""
    app = new_app()
    result = Result(f"terminate-all{'+check' if check else ''}")
    hook = (lambda conn: conn.execute("SELECT 1")) if check else None
    with poolkeeper.Pool(
        cluster.url(application_name=app),
        min_size=4,
        max_size=4,
        timeout=T,
        reconnect_max=RECONNECT_MAX,
        check=hook,
    ) as pool:
        pool.open(wait=True)
        with SizeWatch(pool) as watch, Load(pool, workers=8) as load:
            time.sleep(0.5)
            result.in_use = pool.stats().in_use
            fault_at = time.monotonic()
            # wait=0: signal every backend back to back, not one after the other.
            result.extra["killed"] = cluster.terminate(app, wait=0)
            back_at = time.monotonic()
            time.sleep(2.0)
        summarize(result, load.ops, fault_at, back_at)
        result.refill = watch.refill(back_at, 4)
        result.leak = settle_leak(pool, cluster, app)
    return result


def blackhole(cluster: PgCluster, query_timeout: float | None = None) -> Result:
    """Proxy holds every byte (a hung server) for 3 s, then lets them through."""
    app = new_app()
    result = Result("blackhole-3s" + ("+query_timeout" if query_timeout else ""))
    with (
        FaultProxy((cluster.host, cluster.port)) as proxy,
        poolkeeper.Pool(
            cluster.url(application_name=app, port=proxy.port, connect_timeout=2),
            min_size=2,
            max_size=4,
            timeout=T,
            reconnect_max=RECONNECT_MAX,
            query_timeout=query_timeout,
        ) as pool,
    ):
        pool.open(wait=True)
        with SizeWatch(pool) as watch, Load(pool, workers=6) as load:
            time.sleep(0.5)
            result.in_use = pool.stats().in_use
            fault_at = time.monotonic()
            proxy.blackhole()
            time.sleep(3.0)
            proxy.pass_through()
            back_at = time.monotonic()
            time.sleep(2.0)
        summarize(result, load.ops, fault_at, back_at)
        # Queries in flight through the black hole are not bounded by the
        # acquire timeout, only by query_timeout: report their longest run.
        result.extra["max_op"] = round(max(op.ended - op.started for op in load.ops), 3)
        result.refill = watch.refill(back_at, 2)
        result.leak = settle_leak(pool, cluster, app)
    return result


def frozen_backend(cluster: PgCluster) -> Result:
    """SIGSTOP the backend of a connection running a query, query_timeout=1 (S4b).

    ``extra['late']``: seconds from query_timeout expiring (after the query
    was sent) to QueryTimeout reaching the caller; the freeze starts at a
    random phase of the housekeeper's tick. ``refill`` counts from SIGCONT.
    """
    app = new_app()
    result = Result("frozen-backend+query_timeout", in_use=1)
    with poolkeeper.Pool(
        cluster.url(application_name=app),
        min_size=2,
        max_size=2,
        timeout=T,
        query_timeout=QUERY_TIMEOUT,
    ) as pool:
        pool.open(wait=True)
        with SizeWatch(pool) as watch:
            sent_at = raised_at = time.monotonic()
            try:
                with pool.connection() as conn:
                    row = conn.execute("SELECT pg_backend_pid()").fetchone()
                    assert row is not None
                    time.sleep(random.uniform(0.0, 0.25))
                    with cluster.frozen(row[0]):
                        sent_at = time.monotonic()
                        conn.execute("SELECT 1")
            except poolkeeper.QueryTimeout:
                result.errors = 1
                raised_at = time.monotonic()
            result.extra["late"] = round(raised_at - sent_at - QUERY_TIMEOUT, 3)
            result.extra["query_timeouts"] = pool.stats().query_timeouts
            time.sleep(1.5)
        result.refill = watch.refill(raised_at, 2)
        result.leak = settle_leak(pool, cluster, app)
    return result


def refused(cluster: PgCluster) -> Result:
    """Proxy RSTs every link and refuses new ones for 2 s, then passes again."""
    app = new_app()
    result = Result("reset+refuse-2s")
    with (
        FaultProxy((cluster.host, cluster.port)) as proxy,
        poolkeeper.Pool(
            cluster.url(application_name=app, port=proxy.port, connect_timeout=2),
            min_size=4,
            max_size=4,
            timeout=T,
            reconnect_max=RECONNECT_MAX,
        ) as pool,
    ):
        pool.open(wait=True)
        errors_before = pool.stats().connect_errors
        with SizeWatch(pool) as watch, Load(pool, workers=8) as load:
            time.sleep(0.5)
            result.in_use = pool.stats().in_use
            fault_at = time.monotonic()
            proxy.reset()  # RST all live links, and every new one
            time.sleep(2.0)
            result.extra["connect_attempts_2s"] = (
                pool.stats().connect_errors - errors_before
            )
            proxy.pass_through()
            back_at = time.monotonic()
            time.sleep(2.0)
        summarize(result, load.ops, fault_at, back_at)
        result.refill = watch.refill(back_at, 4)
        result.leak = settle_leak(pool, cluster, app)
    return result


def slow_connect(cluster: PgCluster) -> Result:
    """Every connect takes 1.5 s (``pre_auth_delay``); callers wait at most T."""
    app = new_app()
    result = Result("slow-connect-1.5s")
    cluster.set_guc("pre_auth_delay", "1500ms")
    try:
        with poolkeeper.Pool(
            cluster.url(application_name=app),
            min_size=0,
            max_size=4,
            timeout=T,
            reconnect_max=RECONNECT_MAX,
        ) as pool:
            fault_at = time.monotonic()
            with Load(pool, workers=4) as load:
                time.sleep(3.5)
            summarize(result, load.ops, fault_at, fault_at)
            result.extra["size"] = pool.stats().size
            result.leak = settle_leak(pool, cluster, app)
    finally:
        cluster.reset_gucs()
    return result


def spike(cluster: PgCluster) -> Result:
    """30 threads hit an empty pool (max 10) at once; connects take 150 ms."""
    app = new_app()
    result = Result("spike-150ms-connect")
    cluster.set_guc("pre_auth_delay", "150ms")
    ops: list[Op] = []
    lock = threading.Lock()
    try:
        with poolkeeper.Pool(
            cluster.url(application_name=app),
            min_size=0,
            max_size=10,
            timeout=5.0,
        ) as pool:
            start = threading.Barrier(30)

            def worker() -> None:
                start.wait()
                for _ in range(20):
                    began = time.monotonic()
                    with pool.connection() as conn:
                        got = time.monotonic()
                        conn.execute("SELECT pg_sleep(0.002)")
                    with lock:
                        ops.append(Op(began, got, time.monotonic(), OK))

            with SizeWatch(pool) as watch:
                threads = [threading.Thread(target=worker) for _ in range(30)]
                for thread in threads:
                    thread.start()
                began = time.monotonic()
                for thread in threads:
                    thread.join()
            summarize(result, ops, began, None)
            result.extra["peak_size"] = max(s for _, s in watch.samples)
            result.extra["elapsed"] = round(time.monotonic() - began, 3)
            result.leak = settle_leak(pool, cluster, app)
    finally:
        cluster.reset_gucs()
    return result


def cancellation(cluster: PgCluster) -> Result:
    """asyncpg AsyncPool: 600 tasks, half cancelled after uniform(0, 10 ms).

    ``max_uses=3`` keeps connects happening throughout, so cancellations land
    in every phase: waiting, connecting, validating, querying, releasing.
    """
    app = new_app()
    result = Result("cancel-600-tasks")
    url = cluster.url().replace("postgresql://", "postgresql+asyncpg://", 1)
    rng = random.Random()

    async def main() -> None:
        async with poolkeeper.AsyncPool(
            url,
            min_size=1,
            max_size=4,
            timeout=T,
            max_uses=3,
            connect_args={"server_settings": {"application_name": app}},
        ) as pool:

            async def user() -> None:
                async with pool.connection() as conn:
                    await conn.execute("SELECT pg_sleep(0.003)")

            cancelled = bad = 0
            for _ in range(20):
                tasks = [asyncio.create_task(user()) for _ in range(30)]
                await asyncio.sleep(rng.uniform(0, 0.01))
                for task in rng.sample(tasks, 15):
                    task.cancel()
                for outcome in await asyncio.gather(*tasks, return_exceptions=True):
                    if isinstance(outcome, asyncio.CancelledError):
                        cancelled += 1
                    elif outcome is not None:
                        bad += 1
            result.errors = bad
            result.extra["cancelled"] = cancelled
            leak = await asyncio.to_thread(settle_leak, pool, cluster, app)
            result.leak = leak
            await asyncio.sleep(1.0)
            result.extra["active_after_1s"] = await asyncio.to_thread(
                cluster.active_backends, app
            )
            began = time.monotonic()
            async with pool.connection() as conn:
                await conn.fetchval("SELECT 1")
            result.first_ok = time.monotonic() - began

    asyncio.run(main())
    return result


SCENARIOS: dict[str, Callable[[PgCluster], Result]] = {
    "restart-fast": lambda c: restart(c, "fast", check=False),
    "restart-immediate": lambda c: restart(c, "immediate", check=False),
    "restart-fast+check": lambda c: restart(c, "fast", check=True),
    "restart-immediate+check": lambda c: restart(c, "immediate", check=True),
    "terminate-all": lambda c: terminate_all(c, check=False),
    "terminate-all+check": lambda c: terminate_all(c, check=True),
    "blackhole": blackhole,
    "blackhole+query_timeout": lambda c: blackhole(c, QUERY_TIMEOUT),
    "frozen-backend+query_timeout": frozen_backend,
    "refused": refused,
    "slow-connect": slow_connect,
    "spike": spike,
    "cancellation": cancellation,
}


# -- report ----------------------------------------------------------------------


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return "never" if value == float("inf") else f"{value:.3f}"


def print_row(r: Result, *, header: bool = False) -> None:
    if header:
        line = (
            f"{'scenario':<24} {'in_use':>6} {'errors':>6} {'stale':>5} {'tmo':>4} "
            f"{'ops':>5} {'max_wait':>8} {'first_ok':>8} {'refill':>7} {'leak':>4}  extra"
        )
        print(line)
        print("-" * len(line))
    extra = " ".join(f"{k}={v}" for k, v in r.extra.items())
    print(
        f"{r.scenario:<24} {r.in_use:>6} {r.errors:>6} {r.stale:>5} "
        f"{r.timeouts:>4} {r.ops:>5} {r.max_wait:>8.3f} {fmt(r.first_ok):>8} "
        f"{fmt(r.refill):>7} {r.leak:>4}  {extra}",
        flush=True,
    )


def print_table(results: list[Result]) -> None:
    for i, r in enumerate(results):
        print_row(r, header=i == 0)


def print_summary(results: list[Result]) -> None:
    print("\nsummary over runs (min / median / max)")
    by_name: dict[str, list[Result]] = {}
    for r in results:
        by_name.setdefault(r.scenario, []).append(r)

    def spread(values: list[float]) -> str:
        if not values:
            return "-"
        return (
            f"{min(values):.3f} / {statistics.median(values):.3f} / {max(values):.3f}"
        )

    for name, runs in by_name.items():
        first = [r.first_ok for r in runs if r.first_ok is not None]
        refill = [r.refill for r in runs if r.refill is not None]
        within = sum(r.errors <= r.in_use for r in runs)
        print(
            f"{name:<24} errors<=in_use in {within}/{len(runs)} runs, "
            f"errors {sum(r.errors for r in runs)} (stale {sum(r.stale for r in runs)}); "
            f"max_wait {max(r.max_wait for r in runs):.3f} s (T={T}); "
            f"first_ok {spread(first)}; refill {spread(refill)}; "
            f"leak {max(r.leak for r in runs)}"
        )


@contextlib.contextmanager
def quiet_pool_logs() -> Iterator[None]:
    """The pool logs every failed connect at WARNING; keep the tables readable."""
    import logging

    logger = logging.getLogger("poolkeeper")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per scenario")
    parser.add_argument(
        "--only", default="", help="comma-separated scenario name prefixes"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    prefixes = [p for p in args.only.split(",") if p]
    names = [
        n for n in SCENARIOS if not prefixes or any(n.startswith(p) for p in prefixes)
    ]
    results: list[Result] = []
    with PgCluster() as cluster, quiet_pool_logs():
        for run in range(args.repeat):
            for name in names:
                if not cluster.is_running:
                    cluster.start()
                result = SCENARIOS[name](cluster)
                result.extra["run"] = run + 1
                results.append(result)
                print_row(result, header=len(results) == 1)
    print()
    print_table(results)
    print_summary(results)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))


if __name__ == "__main__":
    main()
