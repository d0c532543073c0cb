"""Real applications under load: poolkeeper against the pools people use.

Two applications, the same handler code for every pool of a family (see
``asgi_app.py`` and ``wsgi_app.py``):

* **asgi**: a Starlette app under uvicorn (one worker, asyncio loop, h11),
  pools of 20 over asyncpg (asyncpg's own pool with and without its reset on
  release, SQLAlchemy's async engine, poolkeeper's ``AsyncPool`` with and
  without ``reset="full"``, poolkeeper under SQLAlchemy's async engine) and over
  async psycopg 3 (psycopg_pool's ``AsyncConnectionPool``, poolkeeper);
* **wsgi**: a WSGI app under gunicorn ``gthread`` (one worker, 32 threads),
  pools of 20 over psycopg 3 (psycopg_pool's ``ConnectionPool``, SQLAlchemy's
  ``QueuePool``, poolkeeper's ``Pool``, poolkeeper under SQLAlchemy).

Load comes from ``wrk`` (Debian's package) in its own process, 2 threads,
``--latency``, a 2 s client timeout, at 64, 256 and 1,024 open connections,
against ``/query`` (one statement per request) and ``/tx`` (a short read-only
transaction: BEGIN, two statements, COMMIT).

Method: a *cell* is (app, route, concurrency). Each round runs every cell, and
within a cell every contender back to back, in an order rotated each round, so
a noisy neighbour hits all contenders of a cell alike. For each contender the
runner starts a fresh server, waits until its pool is full, warms up with a
1 s wrk run, measures with one wrk run of ``--duration`` seconds, samples
``pg_stat_activity`` (sessions named after the contender) every 0.2 s during
it, and stops the server. It reports, per cell and contender, the median over
rounds of requests/s, p50 and p99 latency, with the spread (min-max) of
requests/s; errors (non-2xx answers plus connect/read/write socket errors),
client timeouts (requests wrk gave up on after 2 s), and the most server
sessions seen. The ratio column is the contender's median requests/s over the
fastest contender of the cell; ``same-round vs best peer`` is the median over
rounds of poolkeeper's requests/s over the best peer's *in the same round*, and
``same-round vs like peer`` the same against the peer doing the same work
(``LIKE_FOR_LIKE``: poolkeeper over asyncpg against asyncpg's pool without its
reset, poolkeeper with ``reset="full"`` against asyncpg's pool with it, ...);
``p99 <= like peer`` counts the rounds where poolkeeper's p99 was no higher.
A p99 of 0 means wrk recorded no completed request (every one timed out).
``--table FILE.json`` prints the tables of a saved run again.

``--hog`` runs one CPU-bound process (a busy loop) beside the server for the
whole run, a realistic noisy neighbour on a small machine. ``uptime`` is
recorded before and after each round.

Examples::

    python benchmarks/apps/run.py --quick
    python benchmarks/apps/run.py --json benchmarks/results/apps.json
    python benchmarks/apps/run.py --hog --app asgi --route query --clients 1024
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

ASGI_POOLS = [
    "asyncpg",
    "asyncpg-noreset",
    "sqlalchemy",
    "psycopg_pool",
    "pk-asyncpg",
    "pk-asyncpg-full",
    "pk-psycopg",
    "pk-sqlalchemy",
    "pk-asyncpg-unfair",
    "pk-asyncpg-bounded",
]
WSGI_POOLS = ["psycopg_pool", "sqlalchemy", "pk-psycopg", "pk-sqlalchemy"]
# The default run leaves out poolkeeper under SQLAlchemy (same pool, one more
# layer) to keep a full run near 20 minutes, and poolkeeper over asyncpg with
# fair=False (hand-off order); name them with --asgi-pools / --wsgi-pools to
# include them.
DEFAULT_ASGI = ASGI_POOLS[:-3]
DEFAULT_WSGI = WSGI_POOLS[:-1]
CLIENTS = [64, 256, 1024]
ROUTES = ["query", "tx"]


@dataclasses.dataclass
class Sample:
    """One measured wrk run of one contender in one cell of one round."""

    app: str
    route: str
    clients: int
    pool: str
    round: int
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    timeouts: int
    sessions: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def server_command(app: str, port: int, python: str) -> list[str]:
    if app == "asgi":
        return [
            python,
            "-m",
            "uvicorn",
            "benchmarks.apps.asgi_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--loop",
            "asyncio",
            "--http",
            "h11",
            "--backlog",
            "4096",
            "--no-access-log",
            "--log-level",
            "warning",
        ]
    return [
        python,
        "-m",
        "gunicorn",
        "-k",
        "gthread",
        "-w",
        "1",
        "--threads",
        "32",
        "--worker-connections",
        "4096",
        "--backlog",
        "4096",
        "-b",
        f"127.0.0.1:{port}",
        "--log-level",
        "warning",
        "benchmarks.apps.wsgi_app:app",
    ]


@contextlib.contextmanager
def server(
    app: str, pool: str, appname: str, dsn: str, size: int, python: str
) -> Iterator[tuple[int, int]]:
    """Run one app server; yield (port, pid) once /health answers ok."""
    port = free_port()
    env = dict(
        os.environ,
        BENCH_POOL=pool,
        BENCH_APPNAME=appname,
        BENCH_DSN=dsn,
        BENCH_POOL_SIZE=str(size),
        # The caller's PYTHONPATH after the repository (e.g. PYTHONPATH=src
        # to measure a checkout's pure-Python source over the installed build).
        PYTHONPATH=os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
        ),
    )
    proc = subprocess.Popen(
        server_command(app, port, python),
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{app}/{pool} server exited: {proc.stderr.read()}")  # type: ignore[union-attr]
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/health", timeout=2
                ) as resp:
                    if resp.read() == b"ok":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{app}/{pool} server did not start")
            time.sleep(0.1)
        yield port, proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def parse_duration_ms(text: str) -> float:
    """wrk prints 1.23ms, 456.78us, 1.02s, 1.5m."""
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"unexpected wrk duration {text!r}")
    value, unit = float(match.group(1)), match.group(2)
    return value * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def parse_wrk(out: str) -> dict[str, float]:
    """Pick requests/s, p50, p99, requests, errors and timeouts from wrk's output."""
    result: dict[str, float] = {"errors": 0, "timeouts": 0}
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Requests/sec:"):
            result["rps"] = float(line.split()[1])
        elif re.match(r"^(50|99)%\s", line):
            pct, value = line.split()
            result[f"p{pct[:-1]}_ms"] = parse_duration_ms(value)
        elif m := re.match(r"^(\d+) requests in", line):
            result["requests"] = int(m.group(1))
        elif line.startswith("Socket errors:"):
            nums = dict(re.findall(r"(connect|read|write|timeout) (\d+)", line))
            result["errors"] += sum(
                int(nums.get(k, 0)) for k in ("connect", "read", "write")
            )
            result["timeouts"] = int(nums.get("timeout", 0))
        elif line.startswith("Non-2xx or 3xx responses:"):
            result["errors"] += int(line.split(":")[1])
    for key in ("rps", "p50_ms", "p99_ms", "requests"):
        result.setdefault(key, 0.0)
    return result


def wrk(
    port: int, route: str, clients: int, duration: float, timeout: float = 2.0
) -> dict[str, float]:
    cmd = [
        "wrk",
        "-t2",
        f"-c{clients}",
        f"-d{duration:g}s",
        "--timeout",
        f"{timeout:g}s",
        "--latency",
        f"http://127.0.0.1:{port}/{route}",
    ]
    out = subprocess.run(
        cmd, capture_output=True, text=True, check=True, timeout=duration + 30
    ).stdout
    return parse_wrk(out)


class SessionSampler:
    """Count server sessions named ``appname`` every 0.2 s; keep the maximum."""

    def __init__(self, dsn: str, appname: str) -> None:
        import psycopg

        self.conn = psycopg.connect(dsn, autocommit=True)
        self.appname = appname
        self.max = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            row = self.conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                (self.appname,),
            ).fetchone()
            self.max = max(self.max, int(row[0]) if row else 0)
            self.stop.wait(0.2)

    def __enter__(self) -> SessionSampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self.conn.close()


@contextlib.contextmanager
def hog(enabled: bool) -> Iterator[None]:
    """Run one busy-loop process for the duration, when enabled."""
    if not enabled:
        yield
        return
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        proc.kill()
        proc.wait()


def uptime() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def run(args: argparse.Namespace) -> dict[str, Any]:
    cells = [
        (app, route, clients)
        for app in args.app
        for route in args.route
        for clients in args.clients
    ]
    pools = {"asgi": args.asgi_pools, "wsgi": args.wsgi_pools}
    samples: list[Sample] = []
    loads: list[dict[str, Any]] = []
    with hog(args.hog):
        for rnd in range(args.rounds):
            loads.append({"round": rnd, "before": uptime()})
            for app, route, clients in cells:
                order = pools[app]
                shift = rnd % len(order)
                order = order[shift:] + order[:shift]
                for pool in order:
                    appname = f"bench-{app}-{pool}"[:63]
                    with server(
                        app, pool, appname, args.dsn, args.pool_size, args.python
                    ) as (port, _pid):
                        wrk(port, route, clients, 1.0, args.client_timeout)
                        with SessionSampler(args.dsn, appname) as sampler:
                            res = wrk(
                                port, route, clients, args.duration, args.client_timeout
                            )
                    sample = Sample(
                        app=app,
                        route=route,
                        clients=clients,
                        pool=pool,
                        round=rnd,
                        rps=res["rps"],
                        p50_ms=res["p50_ms"],
                        p99_ms=res["p99_ms"],
                        requests=int(res["requests"]),
                        errors=int(res["errors"]),
                        timeouts=int(res["timeouts"]),
                        sessions=sampler.max,
                    )
                    samples.append(sample)
                    print(
                        f"round {rnd} {app:4} /{route:5} c={clients:<5} {pool:16} "
                        f"{sample.rps:8.0f} req/s  p50 {sample.p50_ms:7.1f} ms  "
                        f"p99 {sample.p99_ms:7.1f} ms  err {sample.errors}  "
                        f"timeouts {sample.timeouts}  sessions {sample.sessions}",
                        flush=True,
                    )
            loads[-1]["after"] = uptime()
    return {
        "args": {k: v for k, v in vars(args).items() if k != "json"},
        "loads": loads,
        "samples": [dataclasses.asdict(s) for s in samples],
    }


def is_poolkeeper(pool: str) -> bool:
    return pool.startswith("pk-")


#: The peer doing the same work as each poolkeeper contender: same driver,
#: same reset on return (none, or asyncpg's full session reset), same layer.
LIKE_FOR_LIKE = {
    "pk-asyncpg": "asyncpg-noreset",
    "pk-asyncpg-unfair": "asyncpg-noreset",
    "pk-asyncpg-bounded": "asyncpg-noreset",
    "pk-asyncpg-full": "asyncpg",
    "pk-psycopg": "psycopg_pool",
    "pk-sqlalchemy": "sqlalchemy",
}


def p99_no_worse(mine: list[Sample], cell: list[Sample], peer: str) -> str:
    """In how many rounds mine had a p99 no higher than the peer's: "2/3"."""
    theirs = {o.round: o.p99_ms for o in cell if o.pool == peer}
    rounds = [s for s in mine if s.round in theirs]
    wins = sum(1 for s in rounds if s.p99_ms <= theirs[s.round])
    return f"{wins}/{len(rounds)}"


def same_round_ratio(mine: list[Sample], cell: list[Sample], peer: str | None) -> str:
    """Median over rounds of mine / peer (or / the best peer) in the same round."""
    ratios = []
    for s in mine:
        peers = [
            o.rps
            for o in cell
            if o.round == s.round
            and not is_poolkeeper(o.pool)
            and (peer is None or o.pool == peer)
        ]
        if peers and max(peers) > 0:
            ratios.append(s.rps / max(peers))
    return f"{statistics.median(ratios):.2f}x" if ratios else "-"


def table(doc: dict[str, Any]) -> str:
    """Markdown tables: one per (app, route), a row per (clients, pool)."""
    samples = [Sample(**s) for s in doc["samples"]]
    lines: list[str] = []
    keys = sorted(
        {(s.app, s.route) for s in samples}, key=lambda k: (k[0] != "asgi", k[1])
    )
    for app, route in keys:
        lines.append(f"\n#### {app} /{route}\n")
        lines.append(
            "| clients | pool | req/s (median) | spread | vs fastest | same-round vs best peer "
            "| same-round vs like peer | p99 <= like peer | p50 ms | p99 ms | errors "
            "| timeouts | sessions |"
        )
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for clients in sorted({s.clients for s in samples}):
            cell = [
                s
                for s in samples
                if (s.app, s.route, s.clients) == (app, route, clients)
            ]
            pools = list(dict.fromkeys(s.pool for s in cell))
            med = {
                p: statistics.median(s.rps for s in cell if s.pool == p) for p in pools
            }
            fastest = max(med.values()) or 1.0
            for pool in sorted(pools, key=lambda p: -med[p]):
                mine = [s for s in cell if s.pool == pool]
                rps = [s.rps for s in mine]
                same = like = tail = "-"
                if is_poolkeeper(pool):
                    same = same_round_ratio(mine, cell, None)
                    if LIKE_FOR_LIKE.get(pool) in pools:
                        twin = LIKE_FOR_LIKE[pool]
                        like = f"{same_round_ratio(mine, cell, twin)} {twin}"
                        tail = p99_no_worse(mine, cell, twin)
                lines.append(
                    f"| {clients} | {pool} | {med[pool]:,.0f} | {min(rps):,.0f}-{max(rps):,.0f} "
                    f"| {med[pool] / fastest:.2f}x | {same} | {like} | {tail} "
                    f"| {statistics.median(s.p50_ms for s in mine):.1f} "
                    f"| {statistics.median(s.p99_ms for s in mine):.1f} "
                    f"| {sum(s.errors for s in mine)} | {sum(s.timeouts for s in mine)} "
                    f"| {max(s.sessions for s in mine)} |"
                )
    loads = "; ".join(
        f"round {x['round']}: {x['before']} -> {x.get('after', '?')}"
        for x in doc["loads"]
    )
    lines.append(f"\nLoad average (1/5/15 min) per round: {loads}.")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else ""
    )
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument(
        "--app", nargs="+", choices=("asgi", "wsgi"), default=["asgi", "wsgi"]
    )
    parser.add_argument("--route", nargs="+", choices=ROUTES, default=ROUTES)
    parser.add_argument("--clients", nargs="+", type=int, default=CLIENTS)
    parser.add_argument(
        "--asgi-pools", nargs="+", choices=ASGI_POOLS, default=DEFAULT_ASGI
    )
    parser.add_argument(
        "--wsgi-pools", nargs="+", choices=WSGI_POOLS, default=DEFAULT_WSGI
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--duration", type=float, default=4.0, help="seconds per measured wrk run"
    )
    parser.add_argument("--pool-size", type=int, default=20)
    parser.add_argument(
        "--client-timeout",
        type=float,
        default=2.0,
        help="seconds before wrk gives up on a request (default 2)",
    )
    parser.add_argument(
        "--hog", action="store_true", help="run a CPU hog beside the server"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="1 round of 2 s, /query only, 64 and 1,024 clients",
    )
    parser.add_argument(
        "--python", default=sys.executable, help="interpreter for the servers"
    )
    parser.add_argument("--json", help="write every sample to this file")
    parser.add_argument(
        "--table", metavar="JSON", help="only print the tables of a saved run"
    )
    args = parser.parse_args(argv)
    if args.table:
        print(table(json.loads(Path(args.table).read_text())))
        return 0
    if args.quick:
        args.rounds, args.duration = 1, 2.0
        args.route, args.clients = ["query"], [64, 1024]
    doc = run(args)
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=1))
    print(table(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
