"""Compare the default pool against a build with no events and no stats on the hot path.

``bench_overhead.py`` compares configurations of one build; this script
answers the other question: what does the observability machinery cost a
pool nobody observes? It writes a *stripped* copy of ``src/poolkeeper`` to a
temporary directory, with

- every ``if self._events.<kind>: ...`` guard removed from both shells
  (every module of ``_async/`` and the generated ``_sync/``), and
- the hot-path bookkeeping removed from ``PoolState`` (``_core/``): the ``acquires``
  counter and the wait and usage time summaries;

then runs the same loop (one thread, ``max_size=1``, in-memory sqlite,
acquire + release) against both builds in child processes.

Two measurements:

- ``--callgrind`` (default): instructions per cycle under
  ``valgrind --tool=callgrind``, from two runs of each build with different
  cycle counts (the difference cancels interpreter start-up and imports).
  Instruction counts are repeatable on a busy machine, where wall-clock
  timings of a 5 us operation are not; they do not see cache misses.
- ``--wall``: ops/s, builds alternated over ``--rounds`` child processes,
  median reported.

The script fails if a removal finds nothing to remove, so it cannot quietly
compare two identical builds after the code has moved on.

Examples::

    python benchmarks/bench_baseline.py              # callgrind, sync pool
    python benchmarks/bench_baseline.py --strip all,events,stats
    python benchmarks/bench_baseline.py --wall --rounds 11
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"

#: Shell packages whose event guards are removed (every module in them).
SHELLS = ("_async", "_sync")
#: ``PoolState`` bookkeeping removed: (method, statement source) pairs.
STATE_LINES = (
    ("_lend", "self.acquires += 1"),
    ("checkin", "self.usage_time.add(now - entry.checked_out_at)"),
    ("obtained", "self.wait_time.add(waited)"),
    # The fast paths inline the same bookkeeping.
    ("acquire", "self.acquires += 1"),
    ("acquire", "wait = self.wait_time"),
    ("acquire", "wait.count += 1"),
    ("acquire", "wait._samples[wait._i & _MASK] = 0.0"),
    ("acquire", "wait._i += 1"),
    ("release", "usage = self.usage_time"),
    ("release", "held = now - entry.checked_out_at"),
    ("release", "usage.count += 1"),
    ("release", "usage.total += held"),
    ("release", "if held > usage.max:\n    usage.max = held"),
    ("release", "usage._samples[usage._i & _MASK] = held"),
    ("release", "usage._i += 1"),
)

CHILD = """
import sys, time
import poolkeeper
cycles, is_async, config = int(sys.argv[1]), sys.argv[2] == "async", sys.argv[3]


def attach(pool):
    if config == "noop":
        pool.on("checkout", lambda event: None)
        pool.on("checkin", lambda event: None)
    if config in ("prometheus", "both"):
        from prometheus_client import CollectorRegistry
        from poolkeeper.metrics import prometheus

        prometheus.register(pool, CollectorRegistry())
    if config in ("otel", "both"):
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from poolkeeper.metrics import otel

        otel.instrument(pool, MeterProvider(metric_readers=[InMemoryMetricReader()]))


if is_async:
    import asyncio

    async def main():
        pool = poolkeeper.AsyncPool("sqlite+aiosqlite:///:memory:", min_size=1, max_size=1)
        await pool.open(wait=True)
        attach(pool)
        acquire, release = pool.acquire, pool.release
        for _ in range(2000):
            await release(await acquire())
        started = time.perf_counter()
        for _ in range(cycles):
            await release(await acquire())
        elapsed = time.perf_counter() - started
        await pool.close()
        return elapsed

    elapsed = asyncio.run(main())
else:
    pool = poolkeeper.Pool("sqlite:///:memory:", min_size=1, max_size=1)
    pool.open(wait=True)
    attach(pool)
    acquire, release = pool.acquire, pool.release
    for _ in range(2000):
        release(acquire())
    started = time.perf_counter()
    for _ in range(cycles):
        release(acquire())
    elapsed = time.perf_counter() - started
    pool.close()
print(cycles / elapsed if cycles else 0.0)
"""


def _is_event_guard(node: ast.stmt) -> bool:
    """``if self._events.<kind>:`` with no ``else``."""
    if not isinstance(node, ast.If) or node.orelse:
        return False
    test = node.test
    return (
        isinstance(test, ast.Attribute)
        and isinstance(test.value, ast.Attribute)
        and test.value.attr == "_events"
        and isinstance(test.value.value, ast.Name)
        and test.value.value.id == "self"
    )


def _drop_lines(text: str, spans: list[tuple[int, int]]) -> str:
    lines = text.splitlines(keepends=True)
    for start, end in sorted(spans, reverse=True):
        del lines[start - 1 : end]
    return "".join(lines)


def strip_shell(text: str) -> tuple[str, int]:
    """Remove every event guard statement; return the new text and the count."""
    spans = [
        (node.lineno, node.end_lineno or node.lineno)
        for node in ast.walk(ast.parse(text))
        if isinstance(node, ast.stmt) and _is_event_guard(node)
    ]
    return _drop_lines(text, spans), len(spans)


def strip_state(core: Path) -> None:
    """Remove the hot-path counters and time summaries from ``PoolState``.

    ``PoolState``'s methods live in several modules of ``core`` (``_core/``);
    each listed method must be defined exactly once among them.
    """
    files = {path: path.read_text() for path in sorted(core.glob("*.py"))}
    where: dict[str, tuple[Path, ast.FunctionDef]] = {}
    for path, text in files.items():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef) and node.name in dict(STATE_LINES):
                if node.name in where:
                    raise SystemExit(f"_core: {node.name}() defined twice")
                where[node.name] = (path, node)
    spans: dict[Path, list[tuple[int, int]]] = {}
    for method, source in STATE_LINES:
        if method not in where:
            raise SystemExit(f"_core: no method {method}()")
        path, function = where[method]
        found = [
            stmt
            for stmt in ast.walk(function)
            if isinstance(stmt, ast.stmt) and ast.unparse(stmt) == source
        ]
        if len(found) != 1:
            raise SystemExit(f"{path.name}: {source!r} not found once in {method}()")
        spans.setdefault(path, []).append(
            (found[0].lineno, found[0].end_lineno or found[0].lineno)
        )
    for path, file_spans in spans.items():
        path.write_text(_drop_lines(files[path], file_spans))


def build_stripped(into: Path, strip: str) -> Path:
    """Write a package copy under ``into``; return its ``src`` directory.

    ``strip`` is ``events`` (remove the event guards), ``stats`` (remove the
    hot-path counters and summaries), ``all`` (both) or ``none``.
    """
    src = into / "src"
    shutil.copytree(SRC / "poolkeeper", src / "poolkeeper")
    package = src / "poolkeeper"
    if strip in ("events", "all"):
        for shell in SHELLS:
            total = 0
            for path in sorted((package / shell).glob("*.py")):
                text, removed = strip_shell(path.read_text())
                compile(text, str(path), "exec")
                path.write_text(text)
                total += removed
            if total < 5:
                raise SystemExit(f"{shell}/: only {total} event guards found")
    if strip in ("stats", "all"):
        strip_state(package / "_core")
    return src


def run_child(
    build: tuple[Path, str], cycles: int, mode: str, callgrind: Path | None
) -> float:
    """Run the loop in a child; return ops/s, or instructions with ``callgrind``."""
    src, config = build
    env = {**os.environ, "PYTHONPATH": str(src), "PYTHONHASHSEED": "0"}
    command = [sys.executable, "-c", CHILD, str(cycles), mode, config]
    if callgrind is not None:
        command = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={callgrind}",
            *command,
        ]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    if callgrind is None:
        return float(proc.stdout.strip())
    match = re.search(r"Collected\s*:\s*(\d+)", proc.stderr)
    if match is None:
        raise SystemExit(f"no instruction count in valgrind output:\n{proc.stderr}")
    return float(match.group(1))


def main(argv: list[str] | None = None) -> int:
    """Build the stripped copy, measure both builds, print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wall", action="store_true", help="time ops/s instead")
    parser.add_argument("--rounds", type=int, default=9, help="--wall runs per build")
    parser.add_argument("--cycles", type=int, default=20_000)
    parser.add_argument("--mode", choices=("sync", "async"), default="sync")
    parser.add_argument(
        "--strip",
        default="all",
        help="comma-separated stripped builds to compare: all, events, stats",
    )
    parser.add_argument(
        "--configs",
        default="",
        help="also measure the default build with: noop, prometheus, otel, both",
    )
    args = parser.parse_args(argv)
    strips = [name for name in args.strip.split(",") if name]
    if set(strips) - {"all", "events", "stats"}:
        parser.error("--strip takes all, events and/or stats")
    configs = [name for name in args.configs.split(",") if name]
    if set(configs) - {"noop", "prometheus", "otel", "both"}:
        parser.error("--configs takes noop, prometheus, otel and/or both")
    with tempfile.TemporaryDirectory(prefix="poolkeeper-baseline-") as tmp:
        # Every build is a copy, so editing the tree meanwhile changes none.
        default = build_stripped(Path(tmp) / "default", "none")
        builds = {"default": (default, "none")}
        for strip in strips:
            builds[strip] = (build_stripped(Path(tmp) / strip, strip), "none")
        for config in configs:
            builds[config] = (default, config)
        if args.wall:
            results: dict[str, list[float]] = {name: [] for name in builds}
            for round_no in range(args.rounds):
                names = list(builds)
                shift = round_no % len(names)
                for name in names[shift:] + names[:shift]:
                    results[name].append(
                        run_child(builds[name], args.cycles, args.mode, None)
                    )
            # Time per cycle is the inverse of ops/s.
            per_cycle = {n: 1.0 / statistics.median(v) for n, v in results.items()}
            unit = "us per cycle (median of alternated runs)"
            scale = 1e6
            print(
                f"{args.mode} acquire + release, in-memory sqlite, {args.rounds} "
                f"rounds of {args.cycles} cycles, rotating order"
            )
        else:
            per_cycle = {}
            small, large = args.cycles // 4, args.cycles
            for name, build in builds.items():
                counts = [
                    run_child(build, n, args.mode, Path(tmp) / f"{name}-{n}.out")
                    for n in (small, large)
                ]
                per_cycle[name] = (counts[1] - counts[0]) / (large - small)
            unit = "instructions per cycle (callgrind)"
            scale = 1.0
            print(
                f"{args.mode} acquire + release, in-memory sqlite, "
                f"{small} vs {large} cycles"
            )
        labels = {
            "default": "default build, no listener",
            "all": "stripped: no events, no hot-path stats",
            "events": "stripped: no event guards",
            "stats": "stripped: no hot-path stats",
            "noop": "default + no-op checkout/checkin listener",
            "prometheus": "default + Prometheus collector",
            "otel": "default + OpenTelemetry (SDK)",
            "both": "default + Prometheus + OpenTelemetry",
        }
        print(f"{'build':<42}{unit}")
        base = per_cycle["default"]
        for name, value in per_cycle.items():
            if name == "default":
                extra = ""
            elif name in configs:
                extra = f"   {(value / base - 1) * 100:+.1f}% over default"
            else:
                extra = f"   default costs {(base / value - 1) * 100:+.2f}%"
            print(f"{labels[name]:<42}{value * scale:>12,.2f}{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
