"""Failover as callers see it: poolkeeper beside psycopg_pool and SQLAlchemy, same run.

Each scenario runs on private clusters started with the test fixtures
(``tests/support/replication.py``: a primary and one streaming replica;
``tests/support/patroni.py``: three Patroni members and etcd), all on
loopback. Four worker threads (or asyncio tasks) write through a pool of four
connections with a multi-host URL naming every member and
``target_session_attrs=read-write``; each worker loops checkout -> ``INSERT``
-> commit -> return, pausing ``--think`` seconds after a success and
``--pause`` seconds after an error (a request handler's pace, not a spin).

Scenarios:

- ``crash``: the primary's postmaster is killed (``kill -9``); the replica is
  promoted (``pg_ctl promote``) 3 s later;
- ``stale``: the primary turns read-only (``ALTER SYSTEM SET
  default_transaction_read_only = on`` and a reload; what a switchover leaves
  behind) and the replica is promoted at once;
- ``patroni``: ``patronictl switchover --leader A --candidate B --force`` on a
  three-member Patroni cluster (the cluster is reused: each contender switches
  to the next member once the previous leader is back as a streaming replica).

Contenders (each on a fresh replica set for ``crash`` and ``stale``), in one
interleaved run: poolkeeper ``Pool`` (psycopg, psycopg2) and ``AsyncPool``
(psycopg, asyncpg, aiopg); psycopg_pool ``ConnectionPool`` and
``AsyncConnectionPool`` with ``check=ConnectionPool.check_connection``;
SQLAlchemy's ``QueuePool`` with ``pool_pre_ping=True`` (psycopg, psycopg2).
Every pool holds 4 connections, waits at most ``--timeout`` seconds for one,
and uses its defaults otherwise; the URL is the same libpq multi-host URL in
each one's spelling.

Per run, with ``t_w`` the instant the new primary accepts writes (polled every
5 ms over a separate session) and ``t0`` the fault:

- ``err_down``: caller errors (driver errors and pool timeouts) that ended in
  ``[t0, t_w)``; ``err_after``: those that ended after ``t_w``, with their kinds
  (SQLSTATE, or the exception class);
- ``first_ok``: seconds from ``t_w`` to the first successful write;
  ``all_ok``: to the moment every worker has had one (``-`` if one never did
  within ``--after`` seconds);
- ``old_co``: checkouts of a connection to the old primary after ``t_stop``
  (in brackets: after ``t_w``);
- ``outage``: seconds from the old primary's end as one (``t_stop``: the fault
  for ``crash``, the reload for ``stale``, for ``patroni`` the moment it stopped
  answering as a writable primary) to ``t_w``;
- ``conn/s``: driver connect calls per second during ``[t_stop, t_w)``, counted by
  wrapping each driver's connect function (``psycopg.Connection.connect``,
  ``psycopg.AsyncConnection.connect``, ``psycopg2.connect``,
  ``asyncpg.connect``, ``aiopg.connect``) for every contender alike; one call
  may try several hosts (libpq's loop); ``srv/s``: TCP sessions the servers
  logged (``log_connections``) in the same window, replication excluded (not
  counted for ``patroni``).

Examples::

    PYTHONPATH=src python benchmarks/failover.py
    PYTHONPATH=src python benchmarks/failover.py --scenarios crash,stale --only pk-psycopg
    PYTHONPATH=src python benchmarks/failover.py --repeat 2 --label after
    PYTHONPATH=src python benchmarks/failover.py --no-failover --label reads  # read scaling
    python benchmarks/failover.py --compare benchmarks/results/failover-before.json \
        benchmarks/results/failover-after.json

A full run (three scenarios, nine contenders) takes about 8 minutes per
``--repeat``; results go to ``benchmarks/results/failover-LABEL.{md,json}``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime
import json
import logging
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

# ------------------------------------------------------------ connect counting
#
# The wrappers go in before any pool module is imported: poolkeeper keeps a
# reference to asyncpg.connect from its import, psycopg_pool and SQLAlchemy
# look the function up on each connect.

CONNECTS: list[float] = []


def _counted() -> None:
    CONNECTS.append(time.time())


def patch_drivers() -> None:
    """Wrap every PostgreSQL driver's connect function to count its calls."""
    import aiopg
    import asyncpg
    import psycopg
    import psycopg2

    sync_orig = psycopg.Connection.__dict__["connect"].__func__

    def sync_connect(cls: Any, *args: Any, **kwargs: Any) -> Any:
        _counted()
        return sync_orig(cls, *args, **kwargs)

    psycopg.Connection.connect = classmethod(sync_connect)  # type: ignore[method-assign,assignment]
    psycopg.connect = psycopg.Connection.connect  # type: ignore[assignment]
    async_orig = psycopg.AsyncConnection.__dict__["connect"].__func__

    async def async_connect(cls: Any, *args: Any, **kwargs: Any) -> Any:
        _counted()
        return await async_orig(cls, *args, **kwargs)

    psycopg.AsyncConnection.connect = classmethod(async_connect)  # type: ignore[method-assign,assignment]
    for module in (psycopg2, asyncpg, aiopg):
        orig = module.connect

        def counted(*args: Any, _orig: Any = orig, **kwargs: Any) -> Any:
            _counted()
            return _orig(*args, **kwargs)

        module.connect = counted


patch_drivers()

import psycopg  # noqa: E402
from tests.support.patroni import PatroniCluster, PatroniMember  # noqa: E402
from tests.support.replication import Member, ReplicaSet  # noqa: E402

import poolkeeper  # noqa: E402
from poolkeeper.cluster import host_of  # noqa: E402

INSERT = "INSERT INTO failbench (v) VALUES (1)"
WORKERS = 4
POOL_SIZE = 4
RESULTS = ROOT / "benchmarks" / "results"


# ------------------------------------------------------------------ records


@dataclass
class Op:
    """One checkout -> write -> return by a worker (times from ``time.time()``)."""

    worker: int
    started: float
    acquired: float | None
    ended: float
    outcome: str  # "ok", or the error kind
    port: int | None


@dataclass
class Timeline:
    """When the fault happened and when the new primary took writes."""

    old_port: int
    new_port: int
    t0: float = 0.0
    t_stop: float = 0.0  # the old primary stopped being one
    t_w: float = 0.0  # the new primary accepts writes
    error: str | None = None


@dataclass
class Result:
    """One contender's numbers in one scenario run (see the module docstring)."""

    scenario: str
    contender: str
    outage: float
    err_down: int
    err_after: int
    kinds_down: dict[str, int]
    kinds_after: dict[str, int]
    ok_down: int
    first_ok: float | None
    all_ok: float | None
    old_co: int
    old_co_after: int
    connects_per_s: float
    server_per_s: float | None
    writes_after: int
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def kind_of(exc: BaseException) -> str:
    """A short name for an error a caller saw: SQLSTATE, else the class name."""
    seen: BaseException | None = exc
    for _ in range(4):
        if seen is None:
            break
        code = getattr(seen, "sqlstate", None) or getattr(seen, "pgcode", None)
        if isinstance(code, str) and code:
            return code
        seen = getattr(seen, "orig", None) or seen.__cause__
    name = type(exc).__name__
    if "Timeout" in name:
        return f"{type(exc).__module__.split('.')[0]}.{name}"
    return name


def port_of(raw: Any) -> int | None:
    """The server port a driver connection is on (no I/O)."""
    try:
        return host_of(raw).port
    except Exception:
        return None


# --------------------------------------------------------------- contenders


class Contender:
    """A pool under test: open, checkout, write, close (sync or async)."""

    name = ""
    is_async = False

    def __init__(self, urls: dict[str, str], timeout: float) -> None:
        self.urls = urls
        self.timeout = timeout


class PkSync(Contender):
    def __init__(self, driver: str, urls: dict[str, str], timeout: float) -> None:
        super().__init__(urls, timeout)
        self.driver = driver
        self.name = f"poolkeeper {driver}"

    def open(self) -> None:
        url = self.urls["pk"].replace("postgresql://", f"postgresql+{self.driver}://")
        self.pool = poolkeeper.Pool(
            url, min_size=POOL_SIZE, max_size=POOL_SIZE, timeout=self.timeout
        )
        self.pool.open(wait=True, timeout=30)

    def checkout(self) -> Any:
        return self.pool.connection()

    def port(self, conn: Any) -> int | None:
        return port_of(conn)

    def write(self, conn: Any) -> None:
        cur = conn.cursor()
        try:
            cur.execute(INSERT)
        finally:
            cur.close()

    def close(self) -> None:
        self.pool.close()


class PsycopgPoolSync(Contender):
    name = "psycopg_pool"

    def open(self) -> None:
        import psycopg_pool

        self.pool = psycopg_pool.ConnectionPool(
            self.urls["libpq"],
            min_size=POOL_SIZE,
            max_size=POOL_SIZE,
            timeout=self.timeout,
            check=psycopg_pool.ConnectionPool.check_connection,
            open=True,
        )
        self.pool.wait(30)

    def checkout(self) -> Any:
        return self.pool.connection()

    def port(self, conn: Any) -> int | None:
        return port_of(conn)

    def write(self, conn: Any) -> None:
        conn.execute(INSERT)

    def close(self) -> None:
        self.pool.close()


class SqlAlchemySync(Contender):
    def __init__(self, driver: str, urls: dict[str, str], timeout: float) -> None:
        super().__init__(urls, timeout)
        self.driver = driver
        self.name = f"SQLAlchemy {driver}"

    def open(self) -> None:
        import sqlalchemy

        self.engine = sqlalchemy.create_engine(
            self.urls["sa"].replace("postgresql://", f"postgresql+{self.driver}://"),
            pool_size=POOL_SIZE,
            max_overflow=0,
            pool_timeout=self.timeout,
            pool_pre_ping=True,
        )
        with self.engine.connect():
            pass

    @contextlib.contextmanager
    def checkout(self) -> Iterator[Any]:
        with self.engine.begin() as conn:
            yield conn

    def port(self, conn: Any) -> int | None:
        return port_of(conn.connection.dbapi_connection)

    def write(self, conn: Any) -> None:
        conn.exec_driver_sql(INSERT)

    def close(self) -> None:
        self.engine.dispose()


class PkAsync(Contender):
    is_async = True

    def __init__(self, driver: str, urls: dict[str, str], timeout: float) -> None:
        super().__init__(urls, timeout)
        self.driver = driver
        self.name = f"poolkeeper async {driver}"

    async def open(self) -> None:
        url = self.urls["pk"].replace("postgresql://", f"postgresql+{self.driver}://")
        self.pool = poolkeeper.AsyncPool(
            url, min_size=POOL_SIZE, max_size=POOL_SIZE, timeout=self.timeout
        )
        await self.pool.open(wait=True, timeout=30)

    def checkout(self) -> Any:
        return self.pool.connection()

    def port(self, conn: Any) -> int | None:
        return port_of(conn)

    async def write(self, conn: Any) -> None:
        if self.driver == "aiopg":
            cur = await conn.cursor()
            try:
                await cur.execute(INSERT)
            finally:
                cur.close()
        else:
            await conn.execute(INSERT)

    async def close(self) -> None:
        await self.pool.close()


class PsycopgPoolAsync(Contender):
    is_async = True
    name = "psycopg_pool async"

    async def open(self) -> None:
        import psycopg_pool

        self.pool = psycopg_pool.AsyncConnectionPool(
            self.urls["libpq"],
            min_size=POOL_SIZE,
            max_size=POOL_SIZE,
            timeout=self.timeout,
            check=psycopg_pool.AsyncConnectionPool.check_connection,
            open=False,
        )
        await self.pool.open(wait=True, timeout=30)

    def checkout(self) -> Any:
        return self.pool.connection()

    def port(self, conn: Any) -> int | None:
        return port_of(conn)

    async def write(self, conn: Any) -> None:
        await conn.execute(INSERT)

    async def close(self) -> None:
        await self.pool.close()


def contenders(urls: dict[str, str], timeout: float) -> list[Contender]:
    """Every contender, sync ones first, in the order they run."""
    return [
        PkSync("psycopg", urls, timeout),
        PsycopgPoolSync(urls, timeout),
        SqlAlchemySync("psycopg", urls, timeout),
        PkSync("psycopg2", urls, timeout),
        SqlAlchemySync("psycopg2", urls, timeout),
        PkAsync("psycopg", urls, timeout),
        PsycopgPoolAsync(urls, timeout),
        PkAsync("asyncpg", urls, timeout),
        PkAsync("aiopg", urls, timeout),
    ]


def urls_for(ports: list[int], connect_timeout: int) -> dict[str, str]:
    """The same multi-host URL in each contender's spelling."""
    hosts = ",".join(f"127.0.0.1:{p}" for p in ports)
    params = f"target_session_attrs=read-write&connect_timeout={connect_timeout}"
    sa_hosts = "&".join(f"host=127.0.0.1:{p}" for p in ports)
    return {
        "pk": f"postgresql://postgres@{hosts}/postgres?{params}",
        "libpq": f"postgresql://postgres@{hosts}/postgres?{params}",
        "sa": f"postgresql://postgres@/postgres?{sa_hosts}&{params}",
    }


# ------------------------------------------------------------------ workers


@dataclass
class Pace:
    think: float
    pause: float


def run_sync(c: Any, pace: Pace, stop: threading.Event, ops: list[Op]) -> None:
    """Run the workers in threads until ``stop`` is set."""

    def worker(i: int) -> None:
        while not stop.is_set():
            started, acquired, port = time.time(), None, None
            try:
                with c.checkout() as conn:
                    acquired = time.time()
                    port = c.port(conn)
                    c.write(conn)
            except Exception as exc:
                ops.append(Op(i, started, acquired, time.time(), kind_of(exc), port))
                time.sleep(pace.pause)
            else:
                ops.append(Op(i, started, acquired, time.time(), "ok", port))
                time.sleep(pace.think)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


async def run_async(c: Any, pace: Pace, stop: threading.Event, ops: list[Op]) -> None:
    """Run the workers as tasks until ``stop`` is set."""

    async def worker(i: int) -> None:
        while not stop.is_set():
            started, acquired, port = time.time(), None, None
            try:
                async with c.checkout() as conn:
                    acquired = time.time()
                    port = c.port(conn)
                    await c.write(conn)
            except Exception as exc:
                ops.append(Op(i, started, acquired, time.time(), kind_of(exc), port))
                await asyncio.sleep(pace.pause)
            else:
                ops.append(Op(i, started, acquired, time.time(), "ok", port))
                await asyncio.sleep(pace.think)

    await asyncio.gather(*(worker(i) for i in range(WORKERS)))


# ------------------------------------------------------------------- faults


def wait_writable(poll: Callable[[], bool], limit: float = 30.0) -> float:
    """Poll every 5 ms until ``poll()`` is true; return that instant."""
    deadline = time.time() + limit
    while time.time() < deadline:
        with contextlib.suppress(Exception):
            if poll():
                return time.time()
        time.sleep(0.005)
    raise RuntimeError("the new primary never accepted writes")


def member_writable(member: Member) -> Callable[[], bool]:
    def poll() -> bool:
        return bool(member.query("SELECT NOT pg_is_in_recovery()")[0])

    return poll


def fault_crash(rs: ReplicaSet, tl: Timeline, delay: float) -> None:
    """``kill -9`` the primary; promote the replica ``delay`` seconds later."""
    old, new = rs.primary, rs.replicas[0]
    new.query("SELECT 1")  # the poll's session, opened before the clock starts
    tl.t0 = tl.t_stop = time.time()
    old.crash()
    time.sleep(max(0.0, tl.t0 + delay - time.time()))
    promoting = threading.Thread(target=new.promote)
    promoting.start()
    tl.t_w = wait_writable(member_writable(new))
    promoting.join()


def fault_stale(rs: ReplicaSet, tl: Timeline, delay: float) -> None:
    """Turn the primary read-only and promote the replica at once."""
    old, new = rs.primary, rs.replicas[0]
    new.query("SELECT 1")
    tl.t0 = time.time()
    old.make_read_only()
    tl.t_stop = time.time()  # set_guc returns once the reload is done
    promoting = threading.Thread(target=new.promote)
    promoting.start()
    tl.t_w = wait_writable(member_writable(new))
    promoting.join()


def writable_session(port: int) -> psycopg.Connection[Any]:
    return psycopg.connect(
        host="127.0.0.1",
        port=port,
        user="postgres",
        dbname="postgres",
        autocommit=True,
        connect_timeout=2,
    )


WRITABLE = "SELECT NOT pg_is_in_recovery() AND current_setting('transaction_read_only') = 'off'"


def fault_patroni(
    pc: PatroniCluster, old: PatroniMember, new: PatroniMember, tl: Timeline
) -> None:
    """``patronictl switchover`` from ``old`` to ``new``; note both moments."""
    watch_old = writable_session(old.port)
    watch_new = writable_session(new.port)
    command = [
        "patronictl",
        *("-c", str(old.directory / "patroni.yml")),
        *("switchover", "--leader", old.name, "--candidate", new.name, "--force"),
    ]
    done: dict[str, Any] = {}

    def switch() -> None:
        done["proc"] = subprocess.run(
            command, capture_output=True, text=True, timeout=60, check=False
        )

    switching = threading.Thread(target=switch)
    tl.t0 = time.time()
    switching.start()
    deadline = tl.t0 + 60
    try:
        while not (tl.t_stop and tl.t_w) and time.time() < deadline:
            if not tl.t_stop:
                try:
                    if not watch_old.execute(WRITABLE).fetchone()[0]:  # type: ignore[index]
                        tl.t_stop = time.time()
                except psycopg.Error:
                    tl.t_stop = time.time()
            if not tl.t_w:
                try:
                    if watch_new.execute(WRITABLE).fetchone()[0]:  # type: ignore[index]
                        tl.t_w = time.time()
                except psycopg.Error:
                    watch_new.close()
                    with contextlib.suppress(psycopg.Error):
                        watch_new = writable_session(new.port)
            time.sleep(0.005)
    finally:
        watch_old.close()
        watch_new.close()
        switching.join()
    proc = done.get("proc")
    if not tl.t_w:
        raise RuntimeError(f"switchover did not complete: {proc and proc.stdout}")
    tl.t_stop = tl.t_stop or tl.t_w


def server_sessions(members: list[Member], since: float, until: float) -> int:
    """TCP sessions (replication excluded) the members logged in a window."""
    stamp = re.compile(
        r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) UTC \[(\d+)\] LOG:  "
        r"(connection received: host=127\.0\.0\.1|replication connection)"
    )
    count = 0
    for member in members:
        try:
            text = member.logfile.read_text(errors="replace")
        except OSError:
            continue
        received: dict[str, float] = {}
        replication: set[str] = set()
        for line in text.splitlines():
            m = stamp.match(line)
            if m is None:
                continue
            when = (
                datetime.datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S.%f")
                .replace(tzinfo=datetime.timezone.utc)
                .timestamp()
            )
            if m[3].startswith("replication"):
                replication.add(m[2])
            else:
                received[m[2]] = when
        count += sum(
            1
            for pid, when in received.items()
            if pid not in replication and since <= when < until
        )
    return count


# ------------------------------------------------------------------ scoring


def score(
    scenario: str,
    name: str,
    ops: list[Op],
    tl: Timeline,
    connects: list[float],
    server: int | None,
) -> Result:
    """Turn one run's operations into a :class:`Result`."""
    down = [o for o in ops if tl.t0 <= o.ended < tl.t_w]
    after = [o for o in ops if o.ended >= tl.t_w]
    firsts: dict[int, float] = {}
    for o in sorted(after, key=lambda o: o.ended):
        if o.outcome == "ok":
            firsts.setdefault(o.worker, o.ended - tl.t_w)
    # Down: from the old primary's end as one to the new one taking writes.
    outage = tl.t_w - tl.t_stop
    n_conn = sum(1 for t in connects if tl.t_stop <= t < tl.t_w)

    def old(o: Op) -> bool:
        return o.port == tl.old_port and o.acquired is not None

    return Result(
        scenario=scenario,
        contender=name,
        outage=round(outage, 3),
        err_down=sum(1 for o in down if o.outcome != "ok"),
        err_after=sum(1 for o in after if o.outcome != "ok"),
        kinds_down=dict(
            collections.Counter(o.outcome for o in down if o.outcome != "ok")
        ),
        kinds_after=dict(
            collections.Counter(o.outcome for o in after if o.outcome != "ok")
        ),
        ok_down=sum(1 for o in down if o.outcome == "ok"),
        first_ok=round(min(firsts.values()), 4) if firsts else None,
        all_ok=round(max(firsts.values()), 4) if len(firsts) == WORKERS else None,
        old_co=sum(1 for o in ops if old(o) and o.acquired >= tl.t_stop),  # type: ignore[operator]
        old_co_after=sum(1 for o in ops if old(o) and o.acquired >= tl.t_w),  # type: ignore[operator]
        connects_per_s=round(n_conn / outage, 1) if outage > 0 else 0.0,
        server_per_s=round(server / outage, 1)
        if server is not None and outage > 0
        else None,
        writes_after=sum(1 for o in after if o.outcome == "ok"),
        note=tl.error or "",
        extra={"t0": tl.t0, "t_stop": tl.t_stop, "t_w": tl.t_w},
    )


# ------------------------------------------------------------------ running


@dataclass
class Settings:
    delay: float
    after: float
    warmup: float
    timeout: float
    connect_timeout: int
    pace: Pace


def drive(
    c: Contender, s: Settings, fault: Callable[[Timeline], None], tl: Timeline
) -> list[Op]:
    """Open ``c``, load it, inject ``fault`` after the warm-up, keep going ``after`` s."""
    ops: list[Op] = []
    stop = threading.Event()

    def conductor() -> None:
        try:
            time.sleep(s.warmup)
            fault(tl)
            time.sleep(s.after)
        except Exception as exc:
            tl.error = f"fault failed: {exc!r}"[:300]
        finally:
            stop.set()

    CONNECTS.clear()
    if c.is_async:

        async def main() -> None:
            await c.open()  # type: ignore[attr-defined]
            threading.Thread(target=conductor).start()
            try:
                await run_async(c, s.pace, stop, ops)
            finally:
                await c.close()  # type: ignore[attr-defined]

        asyncio.run(main())
    else:
        c.open()  # type: ignore[attr-defined]
        threading.Thread(target=conductor).start()
        try:
            run_sync(c, s.pace, stop, ops)
        finally:
            c.close()  # type: ignore[attr-defined]
    return ops


def replica_run(scenario: str, index: int, s: Settings) -> Result:
    """One contender, one fault, on a fresh primary + replica."""
    rs = ReplicaSet(1).start()
    try:
        rs.primary.execute("CREATE TABLE failbench (v int)")
        rs.wait_replayed()
        urls = urls_for([m.port for m in rs.members], s.connect_timeout)
        c = contenders(urls, s.timeout)[index]
        tl = Timeline(rs.primary.port, rs.replicas[0].port)
        if scenario == "crash":
            fault = lambda tl: fault_crash(rs, tl, s.delay)  # noqa: E731
        else:
            fault = lambda tl: fault_stale(rs, tl, s.delay)  # noqa: E731
        ops = drive(c, s, fault, tl)
        connects = list(CONNECTS)
        server = server_sessions(rs.members, tl.t_stop, tl.t_w) if tl.t_w else None
        if not tl.t_w:
            raise RuntimeError(tl.error or "no failover")
        return score(scenario, c.name, ops, tl, connects, server)
    finally:
        rs.destroy()


def leader_and_candidate(pc: PatroniCluster) -> tuple[PatroniMember, PatroniMember]:
    """The leader and the next running, streaming replica (waits for one)."""
    deadline = time.time() + 60
    while time.time() < deadline:
        view = pc.cluster_view()
        leader = next((m for m in view if m.get("role") == "leader"), None)
        replicas = sorted(
            m["name"]
            for m in view
            if m.get("role") == "replica"
            and m.get("state") == "running"
            and isinstance(m.get("lag"), int)
            and m["lag"] == 0
        )
        if leader is not None and len(replicas) == pc.size - 1:
            names = sorted(m.name for m in pc.members)
            after = names[(names.index(leader["name"]) + 1) % len(names)]
            return pc.member(leader["name"]), pc.member(after)
        time.sleep(0.2)
    raise RuntimeError(f"Patroni cluster not settled: {pc.cluster_view()}")


def patroni_run(pc: PatroniCluster, index: int, s: Settings) -> Result:
    """One contender through one ``patronictl switchover``."""
    old, new = leader_and_candidate(pc)
    urls = urls_for([m.port for m in pc.members], s.connect_timeout)
    c = contenders(urls, s.timeout)[index]
    tl = Timeline(old.port, new.port)
    ops = drive(c, s, lambda tl: fault_patroni(pc, old, new, tl), tl)
    connects = list(CONNECTS)
    if not tl.t_w:
        raise RuntimeError(tl.error or "no switchover")
    return score("patroni", c.name, ops, tl, connects, None)


def prepare_patroni(pc: PatroniCluster) -> None:
    leader, _ = leader_and_candidate(pc)
    with writable_session(leader.port) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS failbench (v int)")


# ------------------------------------------------------------------ reads


def read_scaling(
    replicas: list[int], threads: int, seconds: float, rounds: int, driver: str
) -> list[dict[str, Any]]:
    """Reads per second through ``poolkeeper.Cluster`` with 0, 1, 2 replicas."""
    rows: list[dict[str, Any]] = []
    with ReplicaSet(max(replicas)) as rs:
        rs.primary.execute(
            "CREATE TABLE small AS SELECT g AS id, md5(g::text) AS name"
            " FROM generate_series(1, 100) g"
        )
        rs.wait_replayed()
        samples: dict[int, list[float]] = {n: [] for n in replicas}
        for r in range(rounds):
            order = replicas if r % 2 == 0 else list(reversed(replicas))
            for n in order:
                samples[n].append(reads_per_second(rs, n, threads, seconds, driver))
        cost = pick_cost(rs)
        base = statistics.median(samples[replicas[0]])
        for n in replicas:
            med = statistics.median(samples[n])
            rows.append(
                {
                    "replicas": n,
                    "reads_per_s": round(med),
                    "ratio": round(med / base, 2),
                    "samples": [round(x) for x in samples[n]],
                }
            )
        rows.append({"pick_us": cost})
    return rows


def pick_cost(rs: ReplicaSet, picks: int = 2000) -> dict[str, float]:
    """Microseconds one replica choice takes, both ways, on one live cluster.

    ``kept``: the cluster's own count of connections out (what it uses now);
    ``stats``: each replica pool's ``stats().in_use`` (what it used before).
    Interleaved in blocks of 100, so machine noise hits both alike.
    """
    hosts = ",".join(f"127.0.0.1:{m.port}" for m in rs.members)
    totals = {"kept": 0.0, "stats": 0.0}
    with poolkeeper.Cluster(
        f"postgresql+psycopg://postgres@{hosts}/postgres", min_size=1, max_size=2
    ) as cluster:
        router = cluster._router

        def by_stats(pool: Any) -> int:
            return int(pool.stats().in_use)

        for _ in range(picks // 100):
            for way, busy in (("kept", None), ("stats", by_stats)):
                start = time.perf_counter()
                for _ in range(100):
                    router.pick(True, busy)
                totals[way] += time.perf_counter() - start
    return {way: round(total / picks * 1e6, 1) for way, total in totals.items()}


def reads_per_second(
    rs: ReplicaSet, n: int, threads: int, seconds: float, driver: str
) -> float:
    hosts = ",".join(f"127.0.0.1:{m.port}" for m in rs.members[: n + 1])
    url = f"postgresql+{driver}://postgres@{hosts}/postgres"
    counts = [0] * threads
    stop = threading.Event()
    with poolkeeper.Cluster(url, min_size=0, max_size=threads) as cluster:

        def reader(i: int) -> None:
            while not stop.is_set():
                with cluster.connection(readonly=True) as conn:
                    cur = conn.cursor()
                    cur.execute("SELECT id, name FROM small")
                    cur.fetchall()
                    cur.close()
                counts[i] += 1

        workers = [threading.Thread(target=reader, args=(i,)) for i in range(threads)]
        for w in workers:
            w.start()
        time.sleep(0.5)  # warm-up: connections opened
        start, before = time.time(), sum(counts)
        time.sleep(seconds)
        done, elapsed = sum(counts) - before, time.time() - start
        stop.set()
        for w in workers:
            w.join()
        stats = cluster.stats()
        served = [m.checkouts for m in stats.members]
    assert sum(served[1:]) > 0 or n == 0, "reads never reached a replica"
    return done / elapsed


# ------------------------------------------------------------------ output


def fmt(v: float | None, unit: float = 1.0) -> str:
    return "-" if v is None else f"{v * unit:.0f}" if unit != 1.0 else f"{v:g}"


def kinds(d: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(d.items(), key=lambda kv: -kv[1]))


def table(results: list[Result]) -> str:
    head = (
        "| scenario | contender | outage s | errors down | errors after | kinds after "
        "| first ok ms | all ok ms | old-primary checkouts (after t_w) | connect calls/s "
        "| server sessions/s |\n|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| {r.scenario} | {r.contender} | {r.outage:.2f} | {r.err_down} | "
        f"{r.err_after} | {kinds(r.kinds_after) or '-'} | {fmt(r.first_ok, 1000)} | "
        f"{fmt(r.all_ok, 1000)} | {r.old_co} ({r.old_co_after}) | "
        f"{r.connects_per_s:g} | {fmt(r.server_per_s)} |"
        + (f" {r.note}" if r.note else "")
        for r in results
    ]
    return head + "\n".join(lines) + "\n"


def _median(values: list[float | None]) -> float | None:
    """The median (the worse one of an even count), None (never) above any value."""
    ordered = sorted(values, key=lambda v: (v is None, v or 0.0))
    return ordered[len(ordered) // 2]


def summary(results: list[Result]) -> str:
    """Medians per scenario and contender over the repeats (``-``: never, in most runs)."""
    groups: dict[tuple[str, str], list[Result]] = {}
    for r in results:
        groups.setdefault((r.scenario, r.contender), []).append(r)
    head = (
        "| scenario | contender | runs | errors down | errors after | first ok ms "
        "(each run) | all ok ms | old-primary checkouts | connect calls/s "
        "| server sessions/s |\n|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for (scenario, name), rs in groups.items():
        each = ", ".join(fmt(r.first_ok, 1000) for r in rs)
        lines.append(
            f"| {scenario} | {name} | {len(rs)} | "
            f"{fmt(_median([r.err_down for r in rs]))} | "
            f"{fmt(_median([r.err_after for r in rs]))} | "
            f"{fmt(_median([r.first_ok for r in rs]), 1000)} ({each}) | "
            f"{fmt(_median([r.all_ok for r in rs]), 1000)} | "
            f"{fmt(_median([r.old_co for r in rs]))} | "
            f"{fmt(_median([r.connects_per_s for r in rs]))} | "
            f"{fmt(_median([r.server_per_s for r in rs]))} |"
        )
    return head + "\n".join(lines) + "\n"


def read_table(rows: list[dict[str, Any]], threads: int, driver: str) -> str:
    head = (
        f"| replicas | reads/s ({threads} threads, {driver}), median | ratio to 0 "
        "| each round |\n|---|---|---|---|\n"
    )
    body = "\n".join(
        f"| {r['replicas']} | {r['reads_per_s']} | {r['ratio']:.2f} | "
        f"{', '.join(str(x) for x in r['samples'])} |"
        for r in rows
        if "replicas" in r
    )
    cost = next((r["pick_us"] for r in rows if "pick_us" in r), None)
    tail = (
        f"\nChoosing a replica (2 replicas): {cost['kept']} µs with the cluster's "
        f"own count, {cost['stats']} µs calling each replica pool's stats().\n"
        if cost
        else ""
    )
    return head + body + "\n" + tail


def compare(before_path: str, after_path: str) -> str:
    """A before/after table (medians per scenario and contender) from two JSON files."""
    runs = {}
    for label, path in (("before", before_path), ("after", after_path)):
        data = json.loads(Path(path).read_text())
        runs[label] = [Result(**r) for r in data["results"]]
    keys: list[tuple[str, str]] = []
    for r in runs["before"] + runs["after"]:
        if (r.scenario, r.contender) not in keys:
            keys.append((r.scenario, r.contender))

    def cell(
        label: str, key: tuple[str, str], get: Callable[[Result], Any], unit: float
    ) -> str:
        values = [get(r) for r in runs[label] if (r.scenario, r.contender) == key]
        return fmt(_median(values), unit) if values else "n/a"

    head = (
        "| scenario | contender | errors after t_w | first ok ms | all ok ms "
        "| old-primary checkouts | connect calls/s while down |\n"
        "|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for key in keys:
        cols = [
            (lambda r: r.err_after, 1.0),
            (lambda r: r.first_ok, 1000.0),
            (lambda r: r.all_ok, 1000.0),
            (lambda r: r.old_co, 1.0),
            (lambda r: r.connects_per_s, 1.0),
        ]
        cells = [
            f"{cell('before', key, get, unit)} → {cell('after', key, get, unit)}"
            for get, unit in cols
        ]
        lines.append(f"| {key[0]} | {key[1]} | " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--compare",
        nargs=2,
        metavar=("BEFORE", "AFTER"),
        help="JSON results to compare",
    )
    p.add_argument("--scenarios", default="crash,stale,patroni")
    p.add_argument(
        "--only", default="", help="contender name substrings, comma-separated"
    )
    p.add_argument(
        "--delay", type=float, default=3.0, help="crash: seconds before promote"
    )
    p.add_argument("--after", type=float, default=4.0, help="seconds watched after t_w")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--timeout", type=float, default=2.0, help="each pool's wait limit")
    p.add_argument("--connect-timeout", type=int, default=2)
    p.add_argument("--think", type=float, default=0.005)
    p.add_argument("--pause", type=float, default=0.01)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--reads", action="store_true", help="also measure read scaling")
    p.add_argument("--no-failover", action="store_true", help="only read scaling")
    p.add_argument("--read-threads", type=int, default=8)
    p.add_argument("--read-seconds", type=float, default=2.0)
    p.add_argument("--read-rounds", type=int, default=5)
    p.add_argument("--label", default="run", help="results file name part")
    args = p.parse_args()
    if args.compare:
        print(compare(*args.compare))
        return
    logging.getLogger("poolkeeper").setLevel(logging.CRITICAL)
    logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)
    s = Settings(
        args.delay,
        args.after,
        args.warmup,
        args.timeout,
        args.connect_timeout,
        Pace(args.think, args.pause),
    )
    names = [c.name for c in contenders(urls_for([1], 1), 1.0)]
    tokens = [w.strip() for w in args.only.split(",") if w.strip()]
    wanted = [
        i
        for i, n in enumerate(names)
        if not tokens or any(w == n or (w not in names and w in n) for w in tokens)
    ]
    results: list[Result] = []
    out: dict[str, Any] = {"command": " ".join(sys.argv), "settings": asdict(s)}
    scenarios = [] if args.no_failover else args.scenarios.split(",")
    for scenario in scenarios:
        for rep in range(args.repeat):
            order = wanted if rep % 2 == 0 else list(reversed(wanted))
            if scenario == "patroni":
                with PatroniCluster(3) as pc:
                    prepare_patroni(pc)
                    for i in order:
                        results.append(patroni_run(pc, i, s))
                        print(table(results[-1:]).splitlines()[-1], flush=True)
            else:
                for i in order:
                    results.append(replica_run(scenario, i, s))
                    print(table(results[-1:]).splitlines()[-1], flush=True)
    text = table(results) if results else ""
    if args.repeat > 1 and results:
        text = (
            f"Medians of {args.repeat} runs:\n\n{summary(results)}\nEach run:\n\n{text}"
        )
    if args.reads or args.no_failover:
        rows = read_scaling(
            [0, 1, 2], args.read_threads, args.read_seconds, args.read_rounds, "psycopg"
        )
        out["reads"] = rows
        text += "\n" + read_table(rows, args.read_threads, "psycopg")
    out["results"] = [asdict(r) for r in results]
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"failover-{args.label}"
    stem.with_suffix(".json").write_text(json.dumps(out, indent=1))
    stem.with_suffix(".md").write_text(f"`{out['command']}`\n\n{text}")
    print()
    print(text)


if __name__ == "__main__":
    main()
