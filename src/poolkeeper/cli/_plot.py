"""PNG plots for ``bench --plot`` and ``tune --plot``.

matplotlib is imported inside the functions, with the non-interactive Agg
backend, so the CLI starts fast, works on machines without a display, and
needs matplotlib only when a plot is asked for.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from poolkeeper.cli._common import EXIT_FAILED, CliError

if TYPE_CHECKING:
    from poolkeeper.cli._workload import WorkloadResult

_COLORS = {"unpooled": "#d62728", "pooled": "#1f77b4"}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, plt: Any, path: str) -> None:
    try:
        fig.savefig(path, dpi=110)
    except OSError as exc:
        raise CliError(
            f"cannot write the plot to {path}: {exc.strerror or exc}", EXIT_FAILED
        ) from exc
    finally:
        plt.close(fig)
    if not os.path.getsize(path):
        raise CliError(f"the plot written to {path} is empty", EXIT_FAILED)


def plot_bench(results: Sequence[WorkloadResult], path: str, *, title: str) -> None:
    """Write a latency histogram (log scale) and throughput over time to ``path``.

    Raises:
        CliError: The file cannot be written.
    """
    plt = _pyplot()
    fig, (hist, rate) = plt.subplots(1, 2, figsize=(11, 4.2))
    samples = [x * 1000 for r in results for x in r.latencies if x > 0]
    if samples:
        low, high = max(min(samples), 1e-3), max(samples)
        bins = [low * (high / low) ** (i / 60) for i in range(61)] if high > low else 10
        for result in results:
            data = [x * 1000 for x in result.latencies if x > 0]
            hist.hist(
                data,
                bins=bins,
                alpha=0.6,
                label=f"{result.spec.name} (p99 {result.latency(0.99) * 1000:.2f} ms)",
                color=_COLORS.get(result.spec.name),
            )
        hist.set_xscale("log")
        hist.set_yscale("log")
    hist.set_xlabel("latency per operation (ms, log scale)")
    hist.set_ylabel("operations (log scale)")
    hist.set_title("latency")
    hist.legend()
    for result in results:
        points = result.timeline
        rate.plot(
            [t for t, _ in points],
            [v for _, v in points],
            label=f"{result.spec.name} ({result.ops_per_sec:,.0f} ops/s)",
            color=_COLORS.get(result.spec.name),
        )
    rate.set_xlabel("time (s)")
    rate.set_ylabel("ops/s")
    rate.set_ylim(bottom=0)
    rate.set_title("throughput")
    rate.legend()
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, plt, path)


def plot_tune(
    sizes: Sequence[int],
    throughput: Sequence[float],
    p99_ms: Sequence[float],
    path: str,
    *,
    title: str,
    knee: int | None,
) -> None:
    """Write throughput and p99 latency against pool size to ``path``.

    Raises:
        CliError: The file cannot be written.
    """
    plt = _pyplot()
    fig, left = plt.subplots(figsize=(8, 4.5))
    left.plot(sizes, throughput, marker="o", color=_COLORS["pooled"], label="ops/s")
    left.set_xscale("log", base=2)
    left.set_xticks(list(sizes), [str(s) for s in sizes])
    left.set_xlabel("pool size (max_size)")
    left.set_ylabel("ops/s", color=_COLORS["pooled"])
    left.set_ylim(bottom=0)
    right = left.twinx()
    right.plot(
        sizes, p99_ms, marker="s", color=_COLORS["unpooled"], label="p99 latency"
    )
    right.set_ylabel("p99 latency (ms)", color=_COLORS["unpooled"])
    right.set_ylim(
        bottom=0,
        top=max(p99_ms) * 1.15 if p99_ms and not math.isnan(max(p99_ms)) else None,
    )
    if knee is not None:
        left.axvline(knee, color="gray", linestyle="--", label=f"knee: {knee}")
    handles = left.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    left.legend(
        handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=3
    )
    left.set_title(title)
    fig.tight_layout()
    _save(fig, plt, path)
