"""Fault scenarios S4a, S5, S15 and S16 of RELIABILITY_PLAN.md.

* S4a: the postmaster is frozen (SIGSTOP): idle connections keep serving,
  anything that needs a new connection times out at T.
* S5: ``max_connections`` exhausted: the pool fails callers by T with the
  server's "too many clients" chained, retries with backoff, runs at whatever
  size the server allows and fills up once slots are free again.
* S15: a result set cut mid-message: the caller fails at once, the connection
  is discarded, and no partial result reaches the next request.
* S16: a slow link (latency, jitter, a bandwidth cap): no false invalidation;
  a deaf listener: acquires bounded by T, nothing left blocked.

Figures measured here are printed (``-s``) and quoted in docs/RELIABILITY.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

import poolkeeper
from poolkeeper import PoolEvent
from tests.support.faultproxy import FaultProxy
from tests.support.pgcluster import PgCluster, pg_available
from tests.support.waiting import settle as wait_until
from tests.support.waiting import unique_app

pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.slow]

T = 1.0  # acquire timeout used by the scenarios
TOLERANCE = 0.2
TOO_MANY = "too many clients"


def app() -> str:
    return unique_app("pk-fault")


def settle(check: Callable[[], bool], within: float = 3.0) -> bool:
    return wait_until(check, within, step=0.01)


def asyncpg_url(cluster: PgCluster, port: int | None = None, **params: Any) -> str:
    url = cluster.url(port=port, **params)
    return url.replace("postgresql://", "postgresql+asyncpg://")


def chain(exc: BaseException | None) -> list[BaseException]:
    found = []
    while exc is not None and exc not in found:
        found.append(exc)
        exc = exc.__cause__ or exc.__context__
    return found


def pool_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("poolkeeper-")}


def connect_threads() -> list[threading.Thread]:
    return [t for t in pool_threads() if t.name.startswith("poolkeeper-connect")]


# -- S4a: frozen postmaster -------------------------------------------------------


def test_frozen_postmaster_serves_from_idle_psycopg(pg_cluster: PgCluster) -> None:
    name = app()
    url = pg_cluster.url(application_name=name, connect_timeout=2)
    with poolkeeper.Pool(
        url, min_size=2, max_size=3, timeout=T, reconnect_max=0.5
    ) as pool:
        pool.open(wait=True)
        fast: list[float] = []
        with pg_cluster.frozen():
            held = []
            for _ in range(2):
                started = time.monotonic()
                conn = pool.acquire()
                fast.append(time.monotonic() - started)
                # Existing backends are separate processes: not frozen.
                assert conn.execute("SELECT 1").fetchone() == (1,)
                held.append(conn)
            started = time.monotonic()
            with pytest.raises(poolkeeper.PoolTimeout):
                pool.acquire()  # needs a third connection: the connect hangs
            waited = time.monotonic() - started
            for conn in held:
                pool.release(conn)
            started = time.monotonic()
            with pool.connection() as conn:
                fast.append(time.monotonic() - started)
                conn.execute("SELECT 1")
        thawed = time.monotonic()
        with (
            pool.connection(timeout=5) as a,
            pool.connection(timeout=5) as b,
            pool.connection(timeout=5) as c,
        ):
            for conn in (a, b, c):
                conn.execute("SELECT 1")
        all_three = time.monotonic() - thawed
        print(
            f"\nfrozen postmaster (psycopg): idle acquires max {max(fast) * 1000:.2f} ms,"
            f" PoolTimeout after {waited:.3f} s, 3 connections {all_three:.3f} s"
            " after SIGCONT"
        )
        assert max(fast) < 0.010, fast
        assert T <= waited <= T + TOLERANCE
        assert all_three < 2.0
        assert settle(lambda: pool.stats().size == pg_cluster.backends(name) == 3)
        stats = pool.stats()
        assert stats.closed_by_reason["broken"] == stats.closed_by_reason["check"] == 0


def test_frozen_postmaster_past_connect_timeout_recovers(pg_cluster: PgCluster) -> None:
    """A freeze longer than ``connect_timeout``: connects fail and back off;
    callers time out at T with the connect timeout chained; SIGCONT ends it."""
    name = app()
    url = pg_cluster.url(application_name=name, connect_timeout=2)
    pool: poolkeeper.Pool[Any] = poolkeeper.Pool(
        url, min_size=2, max_size=3, timeout=T, reconnect_max=0.5
    )
    failed: list[float] = []
    pool.on("connect_error", lambda event: failed.append(time.monotonic()))
    with pool:
        pool.open(wait=True)
        with pg_cluster.frozen(), pool.connection() as a, pool.connection() as b:
            frozen_at = time.monotonic()
            waits = []
            causes = []
            while time.monotonic() < frozen_at + 3.0:
                started = time.monotonic()
                with pytest.raises(poolkeeper.PoolTimeout) as info:
                    pool.acquire()
                waits.append(time.monotonic() - started)
                causes.append(info.value.__cause__)
            a.execute("SELECT 1")
            b.execute("SELECT 1")
        thawed = time.monotonic()
        with (
            pool.connection(timeout=5) as a,
            pool.connection(timeout=5) as b,
            pool.connection(timeout=5) as c,
        ):
            for conn in (a, b, c):
                conn.execute("SELECT 1")
        recovered = time.monotonic() - thawed
        print(
            f"\nfrozen 3 s (connect_timeout 2 s): waits {', '.join(f'{w:.3f}' for w in waits)}"
            f"; {len(failed)} connect timeouts; 3 connections {recovered:.3f} s"
            " after SIGCONT"
        )
        assert all(T <= w <= T + TOLERANCE for w in waits), waits
        assert len(failed) >= 1 and failed[0] - frozen_at >= 2.0 - 0.05
        # Once the first connect timed out, timeouts say why.
        assert isinstance(causes[-1], psycopg.OperationalError), causes
        assert "timeout" in str(causes[-1])
        assert recovered < 0.5 + 0.5
        assert settle(lambda: pool.stats().size == pg_cluster.backends(name) == 3)


def test_frozen_postmaster_serves_from_idle_asyncpg(pg_cluster: PgCluster) -> None:
    name = app()
    url = asyncpg_url(pg_cluster, connect_timeout=2)
    args = {"server_settings": {"application_name": name}}

    async def main() -> tuple[list[float], float, float]:
        async with poolkeeper.AsyncPool(
            url,
            min_size=2,
            max_size=3,
            timeout=T,
            reconnect_max=0.5,
            connect_args=args,
        ) as pool:
            await pool.open(wait=True)
            fast: list[float] = []
            with pg_cluster.frozen():
                held = []
                for _ in range(2):
                    started = time.monotonic()
                    conn = await pool.acquire()
                    fast.append(time.monotonic() - started)
                    assert await conn.fetchval("SELECT 1") == 1
                    held.append(conn)
                started = time.monotonic()
                with pytest.raises(poolkeeper.PoolTimeout):
                    await pool.acquire()
                waited = time.monotonic() - started
                for conn in held:
                    await pool.release(conn)
                started = time.monotonic()
                async with pool.connection() as conn:
                    fast.append(time.monotonic() - started)
                    await conn.fetchval("SELECT 1")
            thawed = time.monotonic()

            async def use() -> None:
                async with pool.connection(timeout=5) as conn:
                    await conn.execute("SELECT pg_sleep(0.05)")

            await asyncio.gather(use(), use(), use())
            all_three = time.monotonic() - thawed

            def settled() -> bool:
                return pool.stats().size == pg_cluster.backends(name) == 3

            assert await asyncio.to_thread(settle, settled)
            stats = pool.stats()
            assert stats.closed_by_reason["broken"] == 0
            assert stats.closed_by_reason["check"] == 0
            return fast, waited, all_three

    fast, waited, all_three = asyncio.run(main())
    print(
        f"\nfrozen postmaster (asyncpg): idle acquires max {max(fast) * 1000:.2f} ms,"
        f" PoolTimeout after {waited:.3f} s, 3 connections {all_three:.3f} s"
        " after SIGCONT"
    )
    assert max(fast) < 0.010, fast
    assert T <= waited <= T + TOLERANCE
    assert all_three < 2.0
    assert settle(lambda: pg_cluster.backends(name) == 0)


# -- S5: max_connections exhausted --------------------------------------------------


@pytest.fixture(scope="module")
def small_cluster() -> Iterator[PgCluster]:
    """A private cluster with only 8 connection slots (superusers only here)."""
    reason = pg_available()
    if reason is not None:
        pytest.skip(f"cannot create a PostgreSQL cluster: {reason}")
    cluster = PgCluster(max_connections=8)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@contextlib.contextmanager
def hogging(cluster: PgCluster, leave: int) -> Iterator[list[psycopg.Connection[Any]]]:
    """Hold every free connection slot but ``leave``; close them on exit."""
    cluster.backends("warm-up")  # the admin session takes its slot first
    hogs: list[psycopg.Connection[Any]] = []
    try:
        refused: psycopg.OperationalError | None = None
        while refused is None:
            try:
                hogs.append(psycopg.connect(cluster.url(application_name="hog")))
            except psycopg.OperationalError as exc:
                refused = exc
        assert TOO_MANY in str(refused)
        for _ in range(leave):
            hogs.pop().close()
        yield hogs
    finally:
        for conn in hogs:
            conn.close()


class ConnectErrors:
    """Times of the pool's ``connect_error`` events."""

    def __init__(self, pool: poolkeeper.Pool[Any]) -> None:
        self.times: list[float] = []
        self.messages: list[str] = []
        pool.on("connect_error", self)

    def __call__(self, event: PoolEvent) -> None:
        self.times.append(time.monotonic())
        self.messages.append(str(event.error))

    def between(self, start: float, end: float) -> int:
        return sum(start <= t < end for t in self.times)


#: Reconnect backoff cap for the S5 tests, so that the pool is back within the
#: plan's 2 s of slots freeing up (reconnect_min stays at its 0.05 s default).
S5_RECONNECT_MAX = 1.5


def test_no_free_slots_times_out_with_cause_and_backs_off(
    small_cluster: PgCluster,
) -> None:
    name = app()
    url = small_cluster.url(application_name=name, connect_timeout=2)
    with hogging(small_cluster, leave=0) as hogs:
        pool: poolkeeper.Pool[Any] = poolkeeper.Pool(
            url, min_size=2, max_size=5, timeout=T, reconnect_max=S5_RECONNECT_MAX
        )
        errors = ConnectErrors(pool)
        with pool:
            opened = time.monotonic()
            started = time.monotonic()
            with pytest.raises(poolkeeper.PoolTimeout) as info:
                pool.acquire()
            waited = time.monotonic() - started
            causes = chain(info.value)
            assert any(TOO_MANY in str(exc) for exc in causes[1:]), causes
            time.sleep(max(0.0, opened + 5.0 - time.monotonic()))
            attempts = errors.between(opened, opened + 5.0)
            assert all(TOO_MANY in m for m in errors.messages), errors.messages
            for conn in hogs:
                conn.close()
            released = time.monotonic()
            refilled = settle(lambda: pool.stats().size >= 2, within=4.0)
            refill = time.monotonic() - released
            gaps = [b - a for a, b in itertools.pairwise(errors.times)]
            print(
                f"\nno free slots ({len(hogs)} hogs): PoolTimeout after {waited:.3f} s;"
                f" {attempts} connect attempts in 5 s (gaps "
                f"{', '.join(f'{g:.2f}' for g in gaps)}); min_size reached"
                f" {refill:.3f} s after the hogs left"
            )
            assert T <= waited <= T + TOLERANCE
            assert 3 <= attempts <= 10, attempts
            assert refilled and refill <= 2.0
            with pool.connection() as conn:
                conn.execute("SELECT 1")
            assert settle(lambda: pool.stats().size == small_cluster.backends(name))
            # Regression: once connects succeed again, a timeout from plain
            # exhaustion must not blame the outage that is over (it was
            # chained to the stale "too many clients" error).
            with contextlib.ExitStack() as stack:
                for _ in range(5):
                    stack.enter_context(pool.connection(timeout=5))
                with pytest.raises(poolkeeper.PoolTimeout) as busy:
                    pool.acquire(timeout=0.1)
            assert busy.value.__cause__ is None, busy.value.__cause__


def test_three_free_slots_steady_size_without_thrashing(
    small_cluster: PgCluster,
) -> None:
    name = app()
    url = small_cluster.url(application_name=name, connect_timeout=2)
    with hogging(small_cluster, leave=3):
        pool: poolkeeper.Pool[Any] = poolkeeper.Pool(
            url, min_size=2, max_size=5, timeout=T, reconnect_max=S5_RECONNECT_MAX
        )
        errors = ConnectErrors(pool)
        failures: list[BaseException] = []
        done = 0
        stop = threading.Event()
        lock = threading.Lock()

        def worker() -> None:
            nonlocal done
            while not stop.is_set():
                try:
                    with pool.connection() as conn:
                        conn.execute("SELECT pg_sleep(0.01)")
                    with lock:
                        done += 1
                except Exception as exc:
                    failures.append(exc)

        with pool:
            pool.open(wait=True)
            threads = [threading.Thread(target=worker) for _ in range(5)]
            for thread in threads:
                thread.start()
            try:
                assert settle(lambda: pool.stats().size == 3, within=2.0)
                steady = time.monotonic()
                sizes = []
                while time.monotonic() < steady + 5.0:
                    sizes.append(pool.stats().size)
                    time.sleep(0.05)
            finally:
                stop.set()
                for thread in threads:
                    thread.join(10)
            attempts = errors.between(steady, steady + 5.0)
            stats = pool.stats()
            print(
                f"\n3 of 5 fit: size {min(sizes)}..{max(sizes)} over 5 s, {done} queries,"
                f" {len(failures)} failures, {attempts} failed connects in the 5 s,"
                f" {stats.connections_created} connections created,"
                f" {sum(stats.closed_by_reason.values())} closed"
            )
            assert set(sizes) == {3}
            assert not failures, failures[:3]
            assert stats.connections_created == 3
            assert sum(stats.closed_by_reason.values()) == 0
            # Waiters keep asking for a 4th connection: backoff bounds the tries.
            assert attempts <= 10, attempts
            assert small_cluster.backends(name) == 3


# -- S15: a result set cut mid-message ------------------------------------------------

BIG = "SELECT repeat('x', 1000) FROM generate_series(1, 1000)"
BIG_BYTES = 1000 * 1000
UP_QUERY = "SELECT length(%s)"
UP_PARAMS = ("z" * BIG_BYTES,)


@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_cut_result_never_leaks_into_the_next_request(
    pg_cluster: PgCluster, fault_proxy: FaultProxy, driver: str
) -> None:
    if driver == "psycopg2":
        psycopg2 = pytest.importorskip("psycopg2")
        driver_error: type[Exception] = psycopg2.OperationalError
        iterations = 100
    else:
        driver_error = psycopg.OperationalError
        iterations = 300
    name = app()
    url = pg_cluster.url(application_name=name, port=fault_proxy.port).replace(
        "postgresql://", f"postgresql+{driver}://"
    )
    rng = random.Random(15)
    delays: list[float] = []
    contaminated = 0

    def cut_once(pool: Any, up: bool, limit: int, moments: list[float]) -> None:
        with pool.connection() as conn:
            cur = conn.cursor()
            cur.execute("SELECT 1")  # warm: the cut lands in the big message
            cur.fetchall()
            fault_proxy.truncate_after(limit, direction="up" if up else "down")
            # The whole result is fetched by execute(): a cut one must never
            # come back as a (short) result.
            query, params = (UP_QUERY, UP_PARAMS) if up else (BIG, None)
            try:
                cur.execute(query, params)
            finally:
                moments.append(time.monotonic())

    with poolkeeper.Pool(url, min_size=2, max_size=2, timeout=T) as pool:
        pool.open(wait=True)
        for i in range(iterations):
            if i % 2 == 0:
                # The driver's error leaves the block, as in an application:
                # a cut can leave libpq mid-command (ACTIVE), where a commit
                # on a normal exit would fail too.
                before = fault_proxy.stats.truncated
                # Every other cut is in the query going up (a 1 MB
                # parameter), the rest in the result coming down.
                up = i % 4 == 2
                moments: list[float] = []
                with pytest.raises(driver_error):
                    cut_once(pool, up, rng.randint(1, BIG_BYTES), moments)
                failed_at = moments[0]
                fault_proxy.pass_through()
                link_stats = fault_proxy.stats
                assert link_stats.truncated == before + 1
                assert link_stats.last_truncated_at is not None
                delays.append(failed_at - link_stats.last_truncated_at)
            else:
                token = f"tok-{i}-{uuid.uuid4().hex}"
                with pool.connection() as conn:
                    cur = conn.cursor()
                    cur.execute(
                        "SELECT %s || '-' || g FROM generate_series(1, 3) g", (token,)
                    )
                    rows = [r[0] for r in cur.fetchall()]
                contaminated += rows != [f"{token}-{g}" for g in (1, 2, 3)]
        stats = pool.stats()
        cuts = iterations // 2
        print(
            f"\ncut result set ({driver}): {cuts} cuts (half up, half down), error after: median "
            f"{sorted(delays)[len(delays) // 2] * 1000:.1f} ms, max "
            f"{max(delays) * 1000:.1f} ms; {contaminated} contaminated;"
            f" {stats.closed_by_reason['broken']} discarded as broken,"
            f" {fault_proxy.stats.accepted} proxy links"
        )
        assert contaminated == 0
        # The plan's 50 ms, with slack for the odd scheduling hiccup on a
        # loaded 2-core box for the worst of them.
        assert sorted(delays)[len(delays) // 2] < 0.05
        assert max(delays) < 0.05 + 0.05
        assert stats.closed_by_reason["broken"] == cuts
        # Exactly one new link per cut: the replacement, nothing else discarded.
        assert fault_proxy.stats.accepted == 2 + cuts
        assert settle(lambda: pool.stats().size == 2 == pg_cluster.backends(name))


def test_cut_result_asyncpg(pg_cluster: PgCluster, fault_proxy: FaultProxy) -> None:
    asyncpg = pytest.importorskip("asyncpg")
    name = app()
    url = asyncpg_url(pg_cluster, port=fault_proxy.port)
    args = {"server_settings": {"application_name": name}}
    rng = random.Random(16)
    iterations = 100

    async def main() -> tuple[list[float], int, int]:
        delays: list[float] = []
        contaminated = 0
        async with poolkeeper.AsyncPool(
            url, min_size=2, max_size=2, timeout=T, connect_args=args
        ) as pool:
            await pool.open(wait=True)
            for i in range(iterations):
                if i % 2 == 0:
                    async with pool.connection() as conn:
                        await conn.fetchval("SELECT 1")
                        before = fault_proxy.stats.truncated
                        fault_proxy.truncate_after(
                            rng.randint(1, BIG_BYTES), direction="down"
                        )
                        with pytest.raises(
                            (asyncpg.PostgresConnectionError, ConnectionError)
                        ):
                            await conn.fetch(BIG)
                        failed_at = time.monotonic()
                        fault_proxy.pass_through()
                        stats = fault_proxy.stats
                        assert stats.truncated == before + 1
                        assert stats.last_truncated_at is not None
                        delays.append(failed_at - stats.last_truncated_at)
                else:
                    token = f"tok-{i}-{uuid.uuid4().hex}"
                    async with pool.connection() as conn:
                        rows = await conn.fetch(
                            "SELECT $1::text || '-' || g FROM generate_series(1, 3) g",
                            token,
                        )
                    got = [r[0] for r in rows]
                    contaminated += got != [f"{token}-{g}" for g in (1, 2, 3)]
            broken = pool.stats().closed_by_reason["broken"]

            def settled() -> bool:
                return pool.stats().size == 2 == pg_cluster.backends(name)

            assert await asyncio.to_thread(settle, settled)
        return delays, contaminated, broken

    delays, contaminated, broken = asyncio.run(main())
    print(
        f"\ncut result set (asyncpg): {iterations // 2} cuts, error after the cut: "
        f"max {max(delays) * 1000:.1f} ms; {contaminated} contaminated; {broken} broken"
    )
    assert contaminated == 0
    assert max(delays) < 0.1
    assert broken == iterations // 2


# -- S16: slow link, deaf listener ----------------------------------------------------


def test_slow_link_causes_no_false_invalidation(
    pg_cluster: PgCluster, fault_proxy: FaultProxy
) -> None:
    name = app()
    url = pg_cluster.url(application_name=name, port=fault_proxy.port)
    rtt = 2 * 0.2  # 200 ms per hop
    bound = 2 * (2 * rtt) + 0.1  # the plan's p99 for acquire + query
    discards: list[str | None] = []
    # Autocommit: a query is one round trip (psycopg sends BEGIN separately
    # otherwise), which is what the plan's bound counts. min_size covers the
    # three workers, so no connect (several round trips) lands in the sample.
    pool: poolkeeper.Pool[Any] = poolkeeper.Pool(
        url,
        min_size=3,
        max_size=4,
        timeout=5.0,
        validate_after=0.5,
        connect_args={"autocommit": True},
    )
    pool.on("discard", lambda event: discards.append(event.reason))
    connects: list[float] = []
    pool.on("connect", lambda event: connects.append(event.duration))
    results: list[tuple[bool, float]] = []
    lock = threading.Lock()
    with pool:
        pool.open(wait=True)
        fault_proxy.latency(0.2, jitter=0.05, rate=64 * 1024)

        def worker(seed: int) -> None:
            rng = random.Random(seed)
            for _ in range(4):
                time.sleep(rng.uniform(0.3, 0.9))  # idle long enough to be pinged
                started = time.monotonic()
                took = math.inf
                ok = True
                try:
                    with pool.connection() as conn:
                        # 8 KB of result: 0.12 s at 64 KiB/s on top of the RTT.
                        rows = conn.execute(
                            "SELECT repeat('y', 1000) FROM generate_series(1, 8)"
                        ).fetchall()
                        # Acquire (with its validation ping) + query; the
                        # commit on exit is one more round trip, not counted.
                        took = time.monotonic() - started
                        ok = len(rows) == 8
                except Exception:
                    ok = False
                with lock:
                    results.append((ok, took))

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        # A fourth connection, opened over the slow link.
        with contextlib.ExitStack() as stack:
            for _ in range(4):
                stack.enter_context(pool.connection()).execute("SELECT 1")
        fault_proxy.pass_through()
        stats = pool.stats()
        times = sorted(t for _, t in results)
        p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
        print(
            f"\nslow link (200 +- 50 ms/hop, 64 KiB/s): {len(results)} ops,"
            f" {sum(ok for ok, _ in results)} ok, acquire+query median"
            f" {times[len(times) // 2]:.3f} s, p99 {p99:.3f} s (bound {bound:.1f} s);"
            f" {stats.validations} validations, discards {discards};"
            f" a connect over the link took {connects[-1]:.3f} s"
        )
        assert len(results) == 12 and all(ok for ok, _ in results)
        assert len(connects) == 4
        assert stats.validations >= 1  # the health check did run over the slow link
        assert discards == []
        assert stats.closed_by_reason["check"] == stats.closed_by_reason["broken"] == 0
        assert p99 <= bound
        assert settle(lambda: pool.stats().size == pg_cluster.backends(name))


def test_deaf_listener_bounds_acquire_and_blocks_nothing(
    pg_cluster: PgCluster, fault_proxy: FaultProxy
) -> None:
    name = app()
    url = pg_cluster.url(
        application_name=name, port=fault_proxy.port, connect_timeout=2
    )
    threads_before = pool_threads()
    with poolkeeper.Pool(
        url, min_size=1, max_size=2, timeout=T, reconnect_max=0.5
    ) as pool:
        pool.open(wait=True)
        with pool.connection() as held:
            fault_proxy.deaf()
            started = time.monotonic()
            with pytest.raises(poolkeeper.PoolTimeout):
                pool.acquire()  # a second connection: its connect hangs
            waited = time.monotonic() - started
            held.execute("SELECT 1")  # the live link still works
        fault_proxy.pass_through()
        lifted = time.monotonic()
        # The connect under way completes from the backlog (or times out at
        # connect_timeout and is retried): no worker stays blocked.
        unblocked = settle(
            lambda: (
                pool.stats().connecting == 0
                and not connect_threads()
                and pool.stats().size == pg_cluster.backends(name)
            ),
            within=4.0,
        )
        quiet = time.monotonic() - lifted
        with pool.connection() as a, pool.connection() as b:
            a.execute("SELECT 1")
            b.execute("SELECT 1")
        print(
            f"\ndeaf listener: PoolTimeout after {waited:.3f} s; nothing blocked"
            f" {quiet:.3f} s after the listener accepted again"
        )
        assert T <= waited <= T + TOLERANCE
        assert unblocked
    assert settle(lambda: pool_threads() <= threads_before)


def test_deaf_listener_asyncpg_leaves_no_task_blocked(
    pg_cluster: PgCluster, fault_proxy: FaultProxy
) -> None:
    name = app()
    url = asyncpg_url(pg_cluster, port=fault_proxy.port, connect_timeout=2)
    args = {"server_settings": {"application_name": name}}

    def connect_tasks() -> list[asyncio.Task[Any]]:
        return [
            t
            for t in asyncio.all_tasks()
            if t.get_name().startswith("poolkeeper-connect") and not t.done()
        ]

    async def main() -> tuple[float, float]:
        async with poolkeeper.AsyncPool(
            url, min_size=1, max_size=2, timeout=T, reconnect_max=0.5, connect_args=args
        ) as pool:
            await pool.open(wait=True)
            async with pool.connection() as held:
                fault_proxy.deaf()
                started = time.monotonic()
                with pytest.raises(poolkeeper.PoolTimeout):
                    await pool.acquire()
                waited = time.monotonic() - started
                assert await held.fetchval("SELECT 1") == 1
                assert connect_tasks()  # the hung connect is still under way
            fault_proxy.pass_through()
            lifted = time.monotonic()
            while connect_tasks() or pool.stats().connecting:
                assert time.monotonic() - lifted < 4.0, connect_tasks()
                await asyncio.sleep(0.01)
            quiet = time.monotonic() - lifted
            async with pool.connection() as a, pool.connection() as b:
                await a.execute("SELECT 1")
                await b.execute("SELECT 1")

            def settled() -> bool:
                return pool.stats().size == pg_cluster.backends(name) == 2

            assert await asyncio.to_thread(settle, settled)
            return waited, quiet

    waited, quiet = asyncio.run(main())
    print(
        f"\ndeaf listener (asyncpg): PoolTimeout after {waited:.3f} s; no connect"
        f" task left {quiet:.3f} s after the listener accepted again"
    )
    assert T <= waited <= T + TOLERANCE


def test_random_cuts_under_concurrency_never_mix_results(
    pg_cluster: PgCluster, fault_proxy: FaultProxy
) -> None:
    """3 threads on a pool of 2 while links are cut at random points, both ways.

    Cuts land in queries, results, validation pings, commits and connects;
    callers may see errors, but never another request's rows.
    """
    name = app()
    url = pg_cluster.url(
        application_name=name, port=fault_proxy.port, connect_timeout=2
    )
    wrong: list[str] = []
    errors: list[BaseException] = []
    done = 0
    lock = threading.Lock()
    stop = threading.Event()
    with poolkeeper.Pool(
        url, min_size=2, max_size=2, timeout=2.0, reconnect_max=0.2
    ) as pool:
        pool.open(wait=True)

        def worker(seed: int) -> None:
            nonlocal done
            rng = random.Random(seed)
            while not stop.is_set():
                token = uuid.uuid4().hex
                rows_wanted = rng.choice([3, 300])
                try:
                    with pool.connection() as conn:
                        rows = conn.execute(
                            "SELECT %s || '-' || g FROM generate_series(1, %s) g",
                            (token, rows_wanted),
                        ).fetchall()
                        one = conn.execute("SELECT %s::text", (token,)).fetchone()
                    expected = [(f"{token}-{g}",) for g in range(1, rows_wanted + 1)]
                    with lock:
                        if rows != expected or one != (token,):
                            wrong.append(token)
                        done += 1
                except (psycopg.Error, poolkeeper.PoolTimeout) as exc:
                    with lock:
                        errors.append(exc)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
        for thread in threads:
            thread.start()
        rng = random.Random(151)
        try:
            end = time.monotonic() + 4.0
            while time.monotonic() < end:
                fault_proxy.truncate_after(
                    rng.randint(1, 20_000), direction=rng.choice(["up", "down", "both"])
                )
                time.sleep(rng.uniform(0, 0.02))
                fault_proxy.pass_through()
                time.sleep(rng.uniform(0, 0.03))
        finally:
            stop.set()
            for thread in threads:
                thread.join(10)
        truncated = fault_proxy.stats.truncated
        stats = pool.stats()
        print(
            f"\nrandom cuts, 3 threads on 2 connections: {done} requests ok,"
            f" {len(errors)} errors ({truncated} links cut), {len(wrong)} wrong results;"
            f" closed {stats.closed_by_reason}"
        )
        assert wrong == []
        assert done > 3 * truncated > 0
        # Each cut fails at most the request using that link; timeouts would
        # mean the pool got stuck.
        assert not [e for e in errors if isinstance(e, poolkeeper.PoolTimeout)]
        assert len(errors) <= truncated
        assert settle(
            lambda: (
                pool.stats().in_use == 0
                and pool.stats().size == 2 == pg_cluster.backends(name)
            )
        )


@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_validation_ping_into_a_black_hole_keeps_the_timeout(
    pg_cluster: PgCluster, fault_proxy: FaultProxy, driver: str
) -> None:
    # The only idle connection is due a validation ping (idle past
    # validate_after) and leads into a hung server: the ping must not hold
    # the caller past its timeout. The connection is discarded, the caller
    # gets PoolTimeout at T, and once the server answers again the pool works.
    url = pg_cluster.url(application_name=app(), port=fault_proxy.port)
    url = url.replace("postgresql://", f"postgresql+{driver}://")
    discards: list[str | None] = []
    with poolkeeper.Pool(url, min_size=1, max_size=1, timeout=T) as pool:
        pool.on("discard", lambda event: discards.append(event.reason))
        pool.open(wait=True)
        time.sleep(0.6)  # idle past validate_after: the next checkout pings
        fault_proxy.blackhole()
        lift = threading.Timer(2.0, fault_proxy.pass_through)
        lift.start()
        started = time.monotonic()
        try:
            with pytest.raises(poolkeeper.PoolTimeout) as info, pool.connection():
                pass
            waited = time.monotonic() - started
        finally:
            lift.join()
        print(f"\nvalidation ping into a black hole ({driver}): {waited:.3f} s")
        assert T - 0.05 <= waited <= T + TOLERANCE, waited
        assert "validation ping" in str(info.value)
        assert discards == ["check"]
        assert pool.stats().timeouts == 1
        # The hole is gone: a fresh connection serves the next caller.
        with pool.connection(timeout=5.0) as conn:
            conn.cursor().execute("SELECT 1")
        stats = pool.stats()
        assert stats.in_use == 0 and stats.waiting == 0 and stats.size == 1


@pytest.mark.parametrize("driver", ["asyncpg", "psycopg"])
def test_validation_ping_into_a_black_hole_keeps_the_timeout_async(
    pg_cluster: PgCluster, fault_proxy: FaultProxy, driver: str
) -> None:
    # psycopg answers a cancelled command with a cancel request to the server
    # (up to 5 s against a hung one): the pool must abort before it cancels.
    url = pg_cluster.url(application_name=app(), port=fault_proxy.port)
    url = url.replace("postgresql://", f"postgresql+{driver}://")

    async def main() -> float:
        async with poolkeeper.AsyncPool(url, min_size=1, max_size=1, timeout=T) as pool:
            await pool.open(wait=True)
            await asyncio.sleep(0.6)
            fault_proxy.blackhole()
            started = time.monotonic()
            try:
                with pytest.raises(poolkeeper.PoolTimeout, match="validation ping"):
                    async with pool.connection():
                        pass
                waited = time.monotonic() - started
            finally:
                fault_proxy.pass_through()
            async with pool.connection(timeout=5.0) as conn:
                await conn.execute("SELECT 1")
            stats = pool.stats()
            assert stats.in_use == 0 and stats.waiting == 0 and stats.timeouts == 1
            assert stats.closed_by_reason["check"] == 1
        return waited

    waited = asyncio.run(main())
    print(f"\nvalidation ping into a black hole (async {driver}): {waited:.3f} s")
    assert T - 0.05 <= waited <= T + TOLERANCE, waited


def test_validation_ping_budget_counts_the_time_already_waited(
    pg_cluster: PgCluster, fault_proxy: FaultProxy
) -> None:
    # The caller queues for 0.6 s behind a holder; the connection it is then
    # handed is pinged (validate="always") into a hung server. Its timeout
    # counts from the start of the checkout, not from the ping.
    url = pg_cluster.url(application_name=app(), port=fault_proxy.port)
    url = url.replace("postgresql://", "postgresql+psycopg://")
    with poolkeeper.Pool(
        url, min_size=1, max_size=1, timeout=T, validate="always"
    ) as pool:
        pool.open(wait=True)
        held = pool.acquire()

        def hand_over() -> None:
            time.sleep(0.6)
            fault_proxy.blackhole()
            pool.release(held)

        holder = threading.Thread(target=hand_over)
        holder.start()
        started = time.monotonic()
        try:
            with pytest.raises(poolkeeper.PoolTimeout, match="validation ping"):
                pool.acquire()
            waited = time.monotonic() - started
        finally:
            holder.join()
            fault_proxy.pass_through()
        print(f"\nvalidation ping after a 0.6 s wait: PoolTimeout after {waited:.3f} s")
        assert T - 0.05 <= waited <= T + TOLERANCE, waited
        with pool.connection(timeout=5.0) as conn:
            conn.execute("SELECT 1")
        assert pool.stats().in_use == 0
