"""The sync connection cycle of both builds against psycopg2's pool and DBUtils.

Issue 18 asks the thread pool's connection cycle (``acquire()``/``release()``
and ``with pool.connection()``, no query) to be ahead of psycopg2's
``ThreadedConnectionPool`` and DBUtils' ``PooledDB`` with 1 and 8 threads, on
pools of 4 and 16, over psycopg and psycopg2. This script measures, on the
local PostgreSQL, in one interleaved run:

- ``compiled`` / ``pure``: poolkeeper's ``Pool``, acquire/release and
  ``with``, from the compiled build (``.venv-compiled/``, made by
  ``scripts/test-compiled``, or ``--compiled DIR``) and from the same install
  with ``POOLKEEPER_PURE=1``;
- ``psycopg2 Threaded``: ``ThreadedConnectionPool.getconn()``/``putconn()``
  (psycopg2 rows only), behind a ``BoundedSemaphore`` of the pool's size
  when there are more threads than connections, because it raises instead
  of waiting when exhausted;
- ``DBUtils``: ``PooledDB(creator, blocking=True).connection()`` and
  ``.close()``, its defaults otherwise.

Every measurement runs in its own process (the build is chosen at import),
after a warm-up; the contenders of a row run in a rotated order on every
round; ``--both`` adds the poolkeeper forms with ``fair=False`` to the same
rounds of every row of more than one thread. Each thread counts its own cycles; the table shows the median ops/s of
the rounds and each poolkeeper form's ratio to the fastest peer of the row.

Example::

    scripts/test-compiled --collect-only -q >/dev/null   # builds .venv-compiled/
    .venv/bin/python benchmarks/compiled_sync.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
ROOT = Path(__file__).resolve().parent.parent
POOLKEEPER_FORMS = (
    "compiled acquire/release",
    "compiled with",
    "pure acquire/release",
    "pure with",
)
PEERS = ("psycopg2 Threaded", "DBUtils")
#: The suffix of a poolkeeper form run with ``fair=False`` (``--both``).
UNFAIR = " unfair"
UNFAIR_FORMS = tuple(form + UNFAIR for form in POOLKEEPER_FORMS)


def _connect_fn(driver: str, dsn: str) -> Callable[[], Any]:
    if driver == "psycopg2":
        import psycopg2

        return lambda: psycopg2.connect(dsn)
    import psycopg

    return lambda: psycopg.connect(dsn)


def _cycle(
    contender: str, driver: str, dsn: str, size: int, threads: int
) -> tuple[Callable[[], None], Callable[[], None], str]:
    """Return (one cycle, close, build) for a contender."""
    if contender == "psycopg2 Threaded":
        import psycopg2.pool

        threaded = psycopg2.pool.ThreadedConnectionPool(size, size, dsn)
        gate = threading.BoundedSemaphore(size)
        getconn, putconn = threaded.getconn, threaded.putconn

        def threaded_cycle() -> None:
            putconn(getconn())

        def gated_cycle() -> None:
            with gate:
                putconn(getconn())

        # The semaphore only where the pool could run out (it costs more
        # than the pool's own cycle).
        cycle = gated_cycle if threads > size else threaded_cycle
        return cycle, threaded.closeall, "-"
    if contender == "DBUtils":
        from dbutils.pooled_db import PooledDB

        connect = _connect_fn(driver, dsn)
        pooled = PooledDB(
            connect, mincached=size, maxcached=size, maxconnections=size, blocking=True
        )
        connection = pooled.connection

        def dbutils_cycle() -> None:
            connection().close()

        return dbutils_cycle, pooled.close, "-"
    import poolkeeper

    url = f"postgresql+{driver}://" + dsn.partition("://")[2]
    fair = os.environ.get("BENCH_FAIR", "1") == "1" and not contender.endswith(UNFAIR)
    pool: Any = poolkeeper.Pool(url, min_size=size, max_size=size, fair=fair)
    pool.open(wait=True, timeout=30.0)
    acquire, release, connection = pool.acquire, pool.release, pool.connection

    def acquire_cycle() -> None:
        release(acquire())

    def with_cycle() -> None:
        with connection():
            pass

    cycle = with_cycle if "with" in contender.split() else acquire_cycle
    return cycle, pool.close, poolkeeper.BUILD


def _worker(args: argparse.Namespace) -> int:
    cycle, close, build = _cycle(
        args.contender, args.driver, args.dsn, args.size, args.threads
    )
    counts = [0] * args.threads
    stop = threading.Event()
    go = threading.Barrier(args.threads + 1)

    def run(slot: int) -> None:
        go.wait()
        n = 0
        while not stop.is_set():
            for _ in range(100):
                cycle()
            n += 100
            counts[slot] = n

    threads = [threading.Thread(target=run, args=(i,)) for i in range(args.threads)]
    for t in threads:
        t.start()
    go.wait()
    time.sleep(args.warmup)
    before = sum(counts)
    started = time.perf_counter()
    time.sleep(args.seconds)
    done = sum(counts) - before
    elapsed = time.perf_counter() - started
    stop.set()
    for t in threads:
        t.join()
    close()
    print(json.dumps({"ops": done / elapsed, "build": build}))
    return 0


def _measure(
    args: argparse.Namespace, contender: str, driver: str, threads: int, size: int
) -> float:
    env = dict(os.environ)
    env.pop("POOLKEEPER_PURE", None)
    env["BENCH_FAIR"] = "0" if args.unfair else "1"
    if contender.startswith("compiled"):
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [args.compiled, env.get("PYTHONPATH")])
        )
    elif contender.startswith("pure"):
        env["POOLKEEPER_PURE"] = "1"
    command = [
        sys.executable, __file__, "--worker", contender, "--driver", driver,
        "--threads", str(threads), "--size", str(size), "--dsn", args.dsn,
        "--seconds", str(args.seconds), "--warmup", str(args.warmup),
    ]  # fmt: skip
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise SystemExit(f"{contender} failed:\n{out.stderr}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    poolkeeper = contender in POOLKEEPER_FORMS or contender in UNFAIR_FORMS
    expected = contender.split()[0] if poolkeeper else "-"
    if result["build"] != expected:
        raise SystemExit(f"{contender} ran the {result['build']} build")
    return float(result["ops"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--warmup", type=float, default=0.3)
    parser.add_argument("--threads", default="1,8")
    parser.add_argument("--sizes", default="4,16")
    parser.add_argument("--drivers", default="psycopg,psycopg2")
    parser.add_argument("--compiled", default=str(ROOT / ".venv-compiled"))
    parser.add_argument("--json", help="write the raw samples here")
    parser.add_argument(
        "--unfair", action="store_true", help="poolkeeper pools with fair=False"
    )
    parser.add_argument(
        "--both",
        action="store_true",
        help="also the fair=False forms, in the same rounds (rows of more than 1 thread)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--driver", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        args.contender = args.worker
        args.threads = int(args.threads)
        return _worker(args)

    rows = [
        (driver, int(t), int(s))
        for driver in args.drivers.split(",")
        for t in args.threads.split(",")
        for s in args.sizes.split(",")
    ]
    samples: dict[str, dict[str, list[float]]] = {}
    for r in range(args.rounds):
        for driver, threads, size in rows:
            unfair = list(UNFAIR_FORMS) if args.both and threads > 1 else []
            contenders = (
                list(POOLKEEPER_FORMS)
                + unfair
                + [p for p in PEERS if driver == "psycopg2" or p != "psycopg2 Threaded"]
            )
            k = r % len(contenders)
            row = samples.setdefault(f"{driver} {threads} {size}", {})
            for contender in contenders[k:] + contenders[:k]:
                ops = _measure(args, contender, driver, threads, size)
                row.setdefault(contender, []).append(ops)
            print(
                f"round {r + 1}: {driver} threads={threads} max={size} done",
                file=sys.stderr,
            )
    if args.json:
        Path(args.json).write_text(json.dumps(samples, indent=1))
    forms = POOLKEEPER_FORMS + (UNFAIR_FORMS if args.both else ())
    header = ["driver", "threads", "max", *forms, *PEERS, "fastest peer"]
    header += [f"{form} / peer" for form in forms]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * 3 + "---:|" * (len(header) - 3))
    for key, row in samples.items():
        med = {name: statistics.median(values) for name, values in row.items()}
        peer = max((p for p in PEERS if p in med), key=med.__getitem__)
        cells = key.split() + [f"{med[f]:,.0f}" if f in med else "-" for f in forms]
        cells += [f"{med[p]:,.0f}" if p in med else "-" for p in PEERS] + [peer]
        cells += [f"**{med[f] / med[peer]:.2f}x**" if f in med else "-" for f in forms]
        print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
