"""Where does a request's CPU go? py-spy on the app server under wrk load.

For each named pool, starts the app server exactly as ``run.py`` does, puts it
under ``wrk`` load, and samples the server's one process with ``py-spy record
--format raw`` (collapsed stacks, GIL-holding samples only with ``--gil``) for
the length of the wrk run. Each stack is charged to the *innermost* frame
whose file belongs to one of the buckets below (so a poolkeeper frame that
calls asyncio is charged to asyncio, the code doing the work), and also counted
for every bucket it passes through ("inclusive"). The table gives both shares
of all samples, per pool, side by side.

The CPU share of the pool's own code (inclusive) against the requests/s it
served says how much of the app's single core the pool takes per request.

Example::

    python benchmarks/apps/profile_app.py --pools asyncpg pk-asyncpg --clients 256
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.apps.run import server, wrk

# py-spy names a frame "function (path/relative/to/sys.path/entry.py:line)".
BUCKETS = [
    ("poolkeeper", "poolkeeper/"),
    ("asyncpg.pool", "asyncpg/pool.py"),
    ("psycopg_pool", "psycopg_pool/"),
    ("sqlalchemy", "sqlalchemy/"),
    ("asyncpg", "asyncpg/"),
    ("psycopg", "psycopg/"),
    ("uvicorn+h11", "uvicorn/"),
    ("uvicorn+h11", "h11/"),
    ("starlette", "starlette/"),
    ("app", "benchmarks/apps/"),
    ("asyncio", "asyncio/"),
    ("selectors", "selectors.py"),
]


def bucket_of(frame: str) -> str | None:
    path = frame.rpartition(" (")[2]
    for name, marker in BUCKETS:
        if path.startswith(marker) or f"/{marker}" in path:
            return name
    return None


def profile(
    pool: str,
    app: str,
    route: str,
    clients: int,
    duration: float,
    args: argparse.Namespace,
) -> tuple[dict[str, float], dict[str, float], float, int]:
    py_spy = args.py_spy or shutil.which("py-spy") or "py-spy"
    appname = f"bench-prof-{pool}"
    with server(app, pool, appname, args.dsn, 20, args.python) as (port, pid):
        wrk(port, route, clients, 1.0)
        with tempfile.NamedTemporaryFile(suffix=".txt") as out:
            result: dict[str, float] = {}
            load = threading.Thread(
                target=lambda: result.update(wrk(port, route, clients, duration))
            )
            load.start()
            subprocess.run(
                [
                    py_spy,
                    "record",
                    "--pid",
                    str(pid),
                    "--duration",
                    str(int(duration)),
                    "--rate",
                    "250",
                    "--format",
                    "raw",
                    "--output",
                    out.name,
                    "--nonblocking",
                    *(["--gil"] if args.gil else []),
                    # gunicorn's requests run in a worker, a child of the pid.
                    *(["--subprocesses"] if app == "wsgi" else []),
                ],
                check=True,
                capture_output=True,
            )
            load.join()
            lines = Path(out.name).read_text().splitlines()
    inner: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    pool_frames: collections.Counter[str] = collections.Counter()
    total = 0
    for line in lines:
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        n = int(count_text)
        total += n
        frames = stack.split(";")
        seen = {b for b in (bucket_of(f) for f in frames) if b}
        for b in seen:
            incl[b] += n
        innermost = next((b for b in map(bucket_of, reversed(frames)) if b), "other")
        inner[innermost] += n
        # The innermost frame of the buckets --top looks at, for --top.
        for f in reversed(frames):
            if bucket_of(f) in args.top_buckets:
                pool_frames[f.partition(" (")[0]] += n
                break
    share_in = {k: v / total for k, v in inner.items()} if total else {}
    share_incl = {k: v / total for k, v in incl.items()} if total else {}
    if args.top:
        print(
            f"\n{pool}: innermost {'/'.join(args.top_buckets)} functions, share of all samples"
        )
        for frame, n in pool_frames.most_common(args.top):
            print(f"  {n / total:6.1%}  {frame}")
    return share_in, share_incl, result.get("rps", 0.0), total


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else ""
    )
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--pools", nargs="+", default=["asyncpg", "pk-asyncpg"])
    parser.add_argument("--app", choices=("asgi", "wsgi"), default="asgi")
    parser.add_argument("--route", default="query")
    parser.add_argument("--clients", type=int, default=256)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument(
        "--gil", action="store_true", help="only samples holding the GIL"
    )
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument(
        "--top", type=int, default=0, help="list the N hottest functions"
    )
    parser.add_argument(
        "--top-buckets",
        nargs="+",
        default=["poolkeeper", "asyncpg.pool", "psycopg_pool"],
        help="buckets whose functions --top lists (default: the pools')",
    )
    parser.add_argument("--py-spy", help="path of the py-spy binary (default: on PATH)")
    args = parser.parse_args(argv)
    rows = {}
    for pool in args.pools:
        rows[pool] = profile(
            pool, args.app, args.route, args.clients, args.duration, args
        )
    names = sorted({k for r in rows.values() for k in (*r[0], *r[1])})
    print(
        f"\n{args.app} /{args.route}, {args.clients} wrk connections, {args.duration:g} s, "
        "share of py-spy samples: innermost bucket / inclusive\n"
    )
    print("| bucket | " + " | ".join(args.pools) + " |")
    print("|---|" + "---|" * len(args.pools))
    for name in names:
        cells = [
            f"{r[0].get(name, 0):.1%} / {r[1].get(name, 0):.1%}" for r in rows.values()
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("| req/s | " + " | ".join(f"{r[2]:,.0f}" for r in rows.values()) + " |")
    print("| samples | " + " | ".join(str(r[3]) for r in rows.values()) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
