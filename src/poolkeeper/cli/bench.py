"""``poolkeeper bench``: what pooling buys on your database.

Runs the same query as connect-per-query (unpooled) and through a poolkeeper
pool, from threads or asyncio tasks, and reports throughput, latency
quantiles, the time spent obtaining a connection, and the speed-up. The JSON
output (``--json``) follows the schema documented in ``docs/CLI.md`` and
identified by :data:`SCHEMA`.
"""

from __future__ import annotations

import argparse
import json
from types import ModuleType
from typing import Any, Literal

import poolkeeper
from poolkeeper._build import build_of
from poolkeeper.cli._common import (
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    Output,
    Target,
    database_url,
    ms_number,
    probe_tcp,
    resolve_target,
)
from poolkeeper.cli._workload import WorkloadResult, WorkloadSpec, preflight, run

#: Identifies the layout of ``bench --json``; bumped on incompatible changes.
SCHEMA = "poolkeeper.bench/1"

DEFAULT_QUERY = "SELECT 1"

EXAMPLES = """\
examples:
  poolkeeper bench                              # embedded SQLite, 4 threads, 3 s each
  poolkeeper bench --url postgresql://postgres@127.0.0.1/test --concurrency 8
  poolkeeper bench --url postgresql+asyncpg://postgres@127.0.0.1/test --async \\
      --concurrency 64 --pool-size 10
  poolkeeper bench --query "SELECT name FROM items WHERE id = 7" --json
  poolkeeper bench --duration 5 --plot bench.png
"""


def build(module: ModuleType | None = None) -> Literal["compiled", "pure"]:
    """Say which build of poolkeeper's core is imported: ``compiled`` or ``pure``.

    A compiled build (mypyc) replaces the core's modules with extension
    modules, so the answer is whether ``poolkeeper._core.state`` was loaded
    from a file with an extension-module suffix (``.so``, ``.pyd``).

    Args:
        module: the module to look at (default: ``poolkeeper._core.state``).

    Returns:
        ``"compiled"`` for an extension module, ``"pure"`` for Python source
        or bytecode.
    """
    if module is None:
        from poolkeeper._core import state

        module = state
    return build_of(module)


def add_parser(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Register the ``bench`` sub-command."""
    parser = subparsers.add_parser(
        "bench",
        parents=parents,
        help="compare connect-per-query with a pool on your database",
        description=(
            "Run a query in a closed loop, first opening a new connection for "
            "every query (unpooled), then through a poolkeeper pool (pooled), "
            "and report ops/s, latency quantiles, time to get a connection and "
            "the speed-up. Without --url, a throwaway SQLite database is used."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_target_arguments(parser)
    parser.add_argument(
        "--pool-size",
        type=positive_int,
        metavar="N",
        help="connections in the (static) pool (default: --concurrency)",
    )
    parser.add_argument(
        "--workload",
        choices=("both", "pooled", "unpooled"),
        default="both",
        help="which workloads to run (default: both)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the results as JSON on stdout"
    )
    parser.add_argument(
        "--plot",
        metavar="PNG",
        help="write a latency histogram and throughput plot to this file",
    )
    parser.set_defaults(func=command)


def add_target_arguments(
    parser: argparse.ArgumentParser, *, duration: float = 3.0, concurrency: int = 4
) -> None:
    """Add the options ``bench`` and ``tune`` share: database, query, load shape."""
    parser.add_argument(
        "--url",
        help=(
            "database URL, e.g. postgresql://user@host/db or sqlite:///file.db "
            "(default: a throwaway SQLite database)"
        ),
    )
    parser.add_argument(
        "--query",
        default=DEFAULT_QUERY,
        help=f"SQL run by every operation (default: {DEFAULT_QUERY!r})",
    )
    parser.add_argument(
        "--concurrency",
        "-c",
        type=positive_int,
        default=concurrency,
        metavar="N",
        help=(
            "threads (or asyncio tasks with --async) running queries "
            f"(default: {concurrency})"
        ),
    )
    parser.add_argument(
        "--async",
        dest="use_async",
        action="store_true",
        help="use asyncio tasks and AsyncPool instead of threads and Pool",
    )
    parser.add_argument(
        "--duration",
        "-d",
        type=positive_float,
        default=duration,
        metavar="SECONDS",
        help=f"seconds per workload (default: {duration:g})",
    )
    parser.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="do not show the progress bar (it is hidden anyway when not a terminal)",
    )


def positive_int(text: str) -> int:
    """Parse an argparse value that must be an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """Parse an argparse value that must be a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def command(args: argparse.Namespace) -> int:
    """Run ``poolkeeper bench``; return the exit code."""
    if args.plot:
        require_matplotlib()
    out = Output(progress=args.progress)
    pool_size: int = args.pool_size or args.concurrency
    with database_url(args.url, use_async=args.use_async) as url:
        target = resolve_target(url, use_async=args.use_async)
        probe_tcp(target)
        preflight(target, args.query)
        names = ("unpooled", "pooled") if args.workload == "both" else (args.workload,)
        results: list[WorkloadResult] = []
        for name in names:
            spec = WorkloadSpec(
                target=target,
                query=args.query,
                concurrency=args.concurrency,
                duration=args.duration,
                pool_size=pool_size if name == "pooled" else None,
            )
            with out.progress(f"{name:>8}", args.duration) as sink:
                results.append(run(spec, sink))
    speedup = _speedup(results)
    if args.json:
        document = to_json(target, args, pool_size, results, speedup)
        out.print(json.dumps(document, indent=2))
    else:
        _print_table(out, target, args, pool_size, results, speedup)
    if args.plot:
        from poolkeeper.cli._plot import plot_bench

        plot_bench(results, args.plot, title=plot_title(target, args, pool_size))
        if not args.json:
            out.print(f"plot written to {args.plot}")
    return EXIT_OK


def plot_title(target: Target, args: argparse.Namespace, pool_size: int) -> str:
    """Title of ``bench --plot``: driver, concurrency, pool size and query."""
    mode = "asyncio tasks" if target.is_async else "threads"
    return (
        f"poolkeeper bench: {target.driver_name}, {args.concurrency} {mode}, "
        f"pool of {pool_size}\nquery {args.query!r}"
    )


def require_matplotlib() -> None:
    """Fail with a usage error before any work when ``--plot`` cannot be honoured."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise CliError(
            "--plot needs matplotlib: pip install 'poolkeeper[cli]'", EXIT_USAGE
        )


def _speedup(results: list[WorkloadResult]) -> float | None:
    by_name = {r.spec.name: r for r in results}
    if (
        "pooled" in by_name
        and "unpooled" in by_name
        and by_name["unpooled"].ops_per_sec
    ):
        return by_name["pooled"].ops_per_sec / by_name["unpooled"].ops_per_sec
    return None


def _print_table(
    out: Output,
    target: Target,
    args: argparse.Namespace,
    pool_size: int,
    results: list[WorkloadResult],
    speedup: float | None,
) -> None:
    rows = []
    for r in results:
        label = (
            r.spec.name if r.spec.pool_size is None else f"pooled ({r.spec.pool_size})"
        )
        gain = (
            "1.00x"
            if r.spec.name == "unpooled"
            else (f"{speedup:.2f}x" if speedup else "-")
        )
        rows.append(
            [
                label,
                f"{r.ops_per_sec:,.0f}",
                ms_number(r.latency(0.50)),
                ms_number(r.latency(0.95)),
                ms_number(r.latency(0.99)),
                ms_number(r.acquire(0.50)),
                ms_number(r.acquire(0.99)),
                gain if speedup else "-",
            ]
        )
    title = (
        f"poolkeeper bench: {target.display} ({target.driver_name}, {args.concurrency} "
        f"{'asyncio tasks' if target.is_async else 'threads'}, "
        f"{args.duration:g} s each, query {args.query!r}; "
        f"poolkeeper {poolkeeper.__version__}, {build()} build)"
    )
    columns = [
        "workload",
        "ops/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "conn p50",
        "conn p99",
        "speed-up",
    ]
    out.table(title, columns, rows)
    if speedup is not None:
        out.print(
            f"pooled is {speedup:.1f}x the throughput of connect-per-query "
            f"(pool of {pool_size}). 'conn' is the connect time (unpooled) "
            "or the wait for a pooled connection."
        )
    if target.is_sqlite:
        out.print(SQLITE_NOTE)
    if not args.plot:
        out.print("--plot bench.png draws the latency histogram and throughput.")


#: Printed under ``bench``'s table on SQLite, where the gain looks smaller.
SQLITE_NOTE = (
    "note: a SQLite connect is only a file open (no network round trips, no "
    "authentication, no server process), so this gain understates what a pool "
    "buys against a networked server: run it on yours with --url, e.g. "
    "--url postgresql://user@host/db."
)


def _summary(
    values: list[float], result: WorkloadResult, kind: str
) -> dict[str, float]:
    get = result.latency if kind == "latency" else result.acquire
    mean = sum(values) / len(values) if values else 0.0
    return {
        "mean": mean * 1000,
        "p50": get(0.50) * 1000,
        "p95": get(0.95) * 1000,
        "p99": get(0.99) * 1000,
        "max": (values[-1] if values else 0.0) * 1000,
    }


def result_json(result: WorkloadResult) -> dict[str, Any]:
    """Render one workload's result as a JSON-ready dict (see ``docs/CLI.md``)."""
    return {
        "workload": result.spec.name,
        "pool_size": result.spec.pool_size,
        "ops": result.ops,
        "elapsed_s": result.elapsed,
        "ops_per_sec": result.ops_per_sec,
        "latency_ms": _summary(result.latencies, result, "latency"),
        "get_connection_ms": _summary(result.acquires, result, "acquire"),
        "timeline": [{"t_s": t, "ops_per_sec": rate} for t, rate in result.timeline],
    }


def to_json(
    target: Target,
    args: argparse.Namespace,
    pool_size: int,
    results: list[WorkloadResult],
    speedup: float | None,
) -> dict[str, Any]:
    """Build the whole ``bench --json`` document."""
    return {
        "schema": SCHEMA,
        "poolkeeper_version": poolkeeper.__version__,
        "build": build(),
        "url": target.display,
        "driver": target.driver_name,
        "mode": "asyncio" if target.is_async else "threads",
        "concurrency": args.concurrency,
        "pool_size": pool_size,
        "duration_s": args.duration,
        "query": args.query,
        "results": [result_json(r) for r in results],
        "speedup": speedup,
    }
