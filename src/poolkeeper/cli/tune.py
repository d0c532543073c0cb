"""``poolkeeper tune``: find the pool size your database and workload want.

Runs the pooled workload at a fixed concurrency once per pool size, then
recommends ``max_size`` at the knee of the throughput curve (the smallest size
reaching :data:`KNEE` of the peak), capped for PostgreSQL by the server's
connection budget shared among ``--processes`` application processes, and
``min_size`` as the smallest size already reaching :data:`WARM` of the peak.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Any

import poolkeeper
from poolkeeper.cli._common import (
    EXIT_OK,
    Output,
    Target,
    database_url,
    ms_number,
    probe_tcp,
    resolve_target,
)
from poolkeeper.cli._workload import WorkloadResult, WorkloadSpec, preflight, run
from poolkeeper.cli.bench import (
    add_target_arguments,
    positive_int,
    require_matplotlib,
)

#: Identifies the layout of ``tune --json``; bumped on incompatible changes.
SCHEMA = "poolkeeper.tune/1"
#: Share of the peak throughput that counts as "as good as it gets".
KNEE = 0.95
#: Share of the peak throughput that ``min_size`` should serve without connecting.
WARM = 0.5

EXAMPLES = """\
examples:
  poolkeeper tune                                     # SQLite, sizes 1..16 at 16 threads
  poolkeeper tune --url postgresql://postgres@127.0.0.1/test --processes 4
  poolkeeper tune --url postgresql+asyncpg://postgres@127.0.0.1/test --async \\
      --concurrency 100 --max-size 64 --plot tune.png
  poolkeeper tune --sizes 2,5,10,20 --query "SELECT pg_sleep(0.005)" --url ...
"""


def add_parser(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Register the ``tune`` sub-command."""
    parser = subparsers.add_parser(
        "tune",
        parents=parents,
        help="sweep pool sizes and recommend min_size/max_size",
        description=(
            "Run the pooled workload once per pool size (1, 2, 4, ... up to "
            "--max-size) at a fixed concurrency, show throughput and latency per "
            "size, and recommend min_size and max_size: the knee of the "
            "throughput curve, capped by the server's max_connections shared "
            "among --processes application processes (PostgreSQL)."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_target_arguments(parser, duration=2.0, concurrency=16)
    parser.add_argument(
        "--max-size",
        type=positive_int,
        default=16,
        metavar="N",
        help="largest pool size to try (default: 16)",
    )
    parser.add_argument(
        "--sizes",
        type=size_list,
        metavar="N,N,...",
        help="exact pool sizes to try instead of powers of two up to --max-size",
    )
    parser.add_argument(
        "--processes",
        type=positive_int,
        default=1,
        metavar="N",
        help="application processes that will each have a pool (default: 1)",
    )
    parser.add_argument(
        "--reserve",
        type=int,
        default=0,
        metavar="N",
        help="server connections to leave for other clients, e.g. admin tools (default: 0)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--plot", metavar="PNG", help="write throughput and p99 per size here"
    )
    parser.set_defaults(func=command)


def size_list(text: str) -> list[int]:
    """Parse ``--sizes``: comma-separated integers >= 1, returned sorted and unique."""
    try:
        return sorted(
            {positive_int(part.strip()) for part in text.split(",") if part.strip()}
        )
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"--sizes: {exc}") from None


def sweep_sizes(max_size: int) -> list[int]:
    """Return 1, 2, 4, ... below ``max_size``, then ``max_size`` itself."""
    sizes = []
    size = 1
    while size < max_size:
        sizes.append(size)
        size *= 2
    sizes.append(max_size)
    return sizes


@dataclass(frozen=True)
class Recommendation:
    """The advice ``tune`` gives, with the reasons behind each number."""

    min_size: int
    max_size: int
    knee: int
    peak_size: int
    budget: int | None
    reasons: list[str]


def recommend(
    results: list[WorkloadResult],
    *,
    budget: int | None,
    processes: int,
    concurrency: int,
) -> Recommendation:
    """Pick ``min_size`` and ``max_size`` from a sweep (see the module docstring)."""
    rates = [(r.spec.pool_size or 0, r.ops_per_sec) for r in results]
    peak_size, peak = max(rates, key=lambda item: item[1])
    share = {size: (rate / peak if peak else 1.0) for size, rate in rates}
    knee = min(size for size, _ in rates if share[size] >= KNEE)
    warm = min(size for size, _ in rates if share[size] >= WARM)
    reasons = [
        f"throughput peaks at {peak:,.0f} ops/s (pool size {peak_size}); size {knee} "
        f"is the smallest reaching {KNEE:.0%} of it ({percent(share[knee])}), so "
        "larger pools only add server load and queueing (the knee of the curve)."
    ]
    max_size = knee
    if knee >= concurrency:
        reasons.append(
            f"the knee equals the concurrency ({concurrency}): every worker had its "
            "own connection; rerun with a higher --concurrency if your application "
            "runs more at once."
        )
    if budget is not None:
        shared = (
            "for this one process"
            if processes == 1
            else f"once shared among {processes} processes"
        )
        reasons.append(
            f"the server allows {budget} connections {shared} "
            "(max_connections minus reserved connections and --reserve)."
        )
        if budget < max_size:
            max_size = max(1, budget)
            reasons.append(
                f"max_size is capped at {max_size} by that budget: the server would "
                "refuse more, so the pool must queue instead."
            )
    min_size = min(warm, max_size)
    below = [size for size, _ in rates if size < warm]
    reasons.append(_min_size_reason(min_size, max_size, warm, below, share))
    return Recommendation(min_size, max_size, knee, peak_size, budget, reasons)


def percent(share: float) -> str:
    """Format a share of the peak as the table prints it (one decimal)."""
    return f"{share:.1%}"


def _min_size_reason(
    min_size: int,
    max_size: int,
    warm: int,
    below: list[int],
    share: dict[int, float],
) -> str:
    if min_size < warm:
        why = f"max_size ({max_size}) caps it"
    else:
        why = f"size {warm} is the smallest reaching {WARM:.0%} of the peak ({percent(share[warm])})"
        if below:
            last = max(below)
            why += f"; size {last} reached {percent(share[last])}"
    text = f"min_size {min_size}: {why}; these connections stay open, so that much load is served without connecting"
    if min_size == max_size:
        return (
            text
            + "; min_size equals max_size, a static pool that neither grows nor shrinks."
        )
    return (
        text
        + f"; under more load the pool grows to max_size {max_size} and shrinks back "
        "to min_size after max_idle."
    )


def plot_title(target: Target, args: argparse.Namespace, advice: Recommendation) -> str:
    """Title of ``tune --plot``: driver, concurrency, sizes tried and the advice."""
    mode = "asyncio tasks" if target.is_async else "threads"
    return (
        f"poolkeeper tune: {target.driver_name}, {args.concurrency} {mode}, "
        f"recommended max_size={advice.max_size}, min_size={advice.min_size}\n"
        f"query {args.query!r}"
    )


def _budget(
    target: Target, processes: int, reserve: int
) -> tuple[int | None, dict[str, int | None]]:
    if not target.is_postgres:
        return None, {}
    from poolkeeper.cli._server import pg_budget

    facts = pg_budget(target)
    max_conn = facts["max_connections"]
    if max_conn is None:
        return None, facts
    usable = max_conn - (facts["reserved_connections"] or 0) - reserve
    return usable // processes, facts


def command(args: argparse.Namespace) -> int:
    """Run ``poolkeeper tune``; return the exit code."""
    if args.plot:
        require_matplotlib()
    out = Output(progress=args.progress)
    sizes: list[int] = args.sizes or sweep_sizes(args.max_size)
    with database_url(args.url, use_async=args.use_async) as url:
        target = resolve_target(url, use_async=args.use_async)
        probe_tcp(target)
        preflight(target, args.query)
        budget, facts = _budget(target, args.processes, args.reserve)
        free = _free_now(facts)
        skipped = [s for s in sizes if free is not None and s > free]
        sizes = [s for s in sizes if s not in skipped] or [1]
        results = []
        for size in sizes:
            spec = WorkloadSpec(
                target, args.query, args.concurrency, args.duration, size
            )
            with out.progress(f"size {size:>4}", args.duration) as sink:
                results.append(run(spec, sink))
    advice = recommend(
        results, budget=budget, processes=args.processes, concurrency=args.concurrency
    )
    if args.json:
        out.print(
            json.dumps(
                _to_json(target, args, results, advice, facts, skipped), indent=2
            )
        )
    else:
        _print(out, target, args, results, advice, skipped)
    if args.plot:
        from poolkeeper.cli._plot import plot_tune

        plot_tune(
            [r.spec.pool_size or 0 for r in results],
            [r.ops_per_sec for r in results],
            [r.latency(0.99) * 1000 for r in results],
            args.plot,
            title=plot_title(target, args, advice),
            knee=advice.knee,
        )
        if not args.json:
            out.print(f"plot written to {args.plot}")
    return EXIT_OK


def _free_now(facts: dict[str, int | None]) -> int | None:
    max_conn, in_use = facts.get("max_connections"), facts.get("in_use")
    if max_conn is None or in_use is None:
        return None
    return max_conn - (facts.get("reserved_connections") or 0) - in_use


def _print(
    out: Output,
    target: Target,
    args: argparse.Namespace,
    results: list[WorkloadResult],
    advice: Recommendation,
    skipped: list[int],
) -> None:
    peak = max(r.ops_per_sec for r in results) or 1.0
    rows = [
        [
            str(r.spec.pool_size)
            + (" *" if r.spec.pool_size == advice.max_size else ""),
            f"{r.ops_per_sec:,.0f}",
            percent(r.ops_per_sec / peak),
            ms_number(r.latency(0.50)),
            ms_number(r.latency(0.99)),
            ms_number(r.acquire(0.99)),
        ]
        for r in results
    ]
    mode = "asyncio tasks" if target.is_async else "threads"
    out.table(
        f"poolkeeper tune: {target.display} ({target.driver_name}, {args.concurrency} "
        f"{mode}, {args.duration:g} s per size, query {args.query!r})",
        ["pool size", "ops/s", "of peak", "p50 ms", "p99 ms", "wait p99 ms"],
        rows,
    )
    if skipped:
        out.print(f"skipped sizes {skipped}: more than the server has free connections")
    out.print(f"recommended: min_size={advice.min_size}, max_size={advice.max_size}")
    for reason in advice.reasons:
        out.print(f"  - {reason}")


def _to_json(
    target: Target,
    args: argparse.Namespace,
    results: list[WorkloadResult],
    advice: Recommendation,
    facts: dict[str, int | None],
    skipped: list[int],
) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "poolkeeper_version": poolkeeper.__version__,
        "url": target.display,
        "driver": target.driver_name,
        "mode": "asyncio" if target.is_async else "threads",
        "concurrency": args.concurrency,
        "duration_s": args.duration,
        "query": args.query,
        "processes": args.processes,
        "server": facts or None,
        "skipped_sizes": skipped,
        "sizes": [
            {
                "pool_size": r.spec.pool_size,
                "ops": r.ops,
                "ops_per_sec": r.ops_per_sec,
                "p50_ms": r.latency(0.50) * 1000,
                "p95_ms": r.latency(0.95) * 1000,
                "p99_ms": r.latency(0.99) * 1000,
                "wait_p99_ms": r.acquire(0.99) * 1000,
            }
            for r in results
        ],
        "recommendation": {
            "min_size": advice.min_size,
            "max_size": advice.max_size,
            "knee": advice.knee,
            "peak_size": advice.peak_size,
            "budget_per_process": advice.budget,
            "reasons": advice.reasons,
        },
    }
