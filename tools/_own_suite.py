"""What the tools running other projects' own test suites share.

``tools/sqlalchemy_suite.py`` and ``tools/asyncpg_suite.py`` each run a
project's tests twice, on the project's own pool (``stock``) and on
poolkeeper's, and accept a test that fails only on poolkeeper's when it is
listed, with its reason, in a checked-in file of expected failures. This
module holds that common part: the outcome of a pytest run read from its
JUnit XML, the expected-failures file, the command-line options, the report
and the comparison. Fetching a suite and running it stay in each tool.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Result:
    """Outcome counts and failing test ids of one pytest run."""

    passed: int = 0
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0
    output: str = ""

    def add(self, other: Result) -> None:
        """Merge another run's outcome into this one."""
        self.passed += other.passed
        self.failed += other.failed
        self.skipped += other.skipped
        self.seconds += other.seconds
        self.output += other.output


def parse_junit(path: Path) -> Result:
    """Read one outcome per test: a test that failed in any phase (call,
    setup, teardown: junit lists such a test more than once) failed."""
    result = Result()
    if not path.exists():
        return result
    outcomes: dict[str, str] = {}
    for case in ET.parse(path).iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        tags = {child.tag for child in case}
        if tags & {"failure", "error"}:
            outcome = "failed"
        elif "skipped" in tags:
            outcome = "skipped"
        else:
            outcome = "passed"
        if outcomes.get(name) != "failed":
            outcomes[name] = outcome
    for name, outcome in outcomes.items():
        if outcome == "failed":
            result.failed.append(name)
        elif outcome == "skipped":
            result.skipped.append(name)
        else:
            result.passed += 1
    return result


def run_pytest(
    cwd: Path,
    plugin: str,
    args: list[str],
    env: Mapping[str, str],
    python_path: list[str],
    timeout: int,
) -> Result:
    """Run pytest in ``cwd`` (a suite's tree) with ``plugin``; return the outcome.

    ``python_path`` goes before the caller's ``PYTHONPATH``; ``env`` is added
    to this process's environment, without ``CI`` (no CI-specific behaviour
    inside another project's suite). ``timeout``: pytest-timeout's, per test.
    """
    full_env = {**os.environ, **env}
    full_env["PYTHONPATH"] = os.pathsep.join(
        [*python_path, *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    full_env.pop("CI", None)
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        command = [
            sys.executable,
            *("-m", "pytest", "-p", plugin, "-p", "no:randomly"),
            *("-p", "no:cacheprovider", "-q", "--tb=short"),
            f"--timeout={timeout}",
            f"--junitxml={junit}",
            *args,
        ]
        started = time.monotonic()
        proc = subprocess.run(
            command, cwd=cwd, env=full_env, capture_output=True, text=True, check=False
        )
        result = parse_junit(junit)
    result.seconds = time.monotonic() - started
    result.output = proc.stdout + proc.stderr
    if proc.returncode not in (0, 1):  # 1: some tests failed
        result.failed.append(f"pytest exited with {proc.returncode} for {args}")
    return result


def expected_failures(path: Path) -> set[str]:
    """The test ids listed in an expected-failures file (``id  # reason`` lines)."""
    ids = set()
    for line in path.read_text().splitlines():
        test_id = line.partition("#")[0].strip()
        if test_id:
            ids.add(test_id)
    return ids


def add_arguments(parser: argparse.ArgumentParser, default_url: str) -> None:
    """The options every suite tool takes."""
    parser.add_argument("--fetch-only", action="store_true")
    parser.add_argument(
        "--pool",
        choices=["compare", "poolkeeper", "stock"],
        default="compare",
        help="compare (default): run with the stock pool, then poolkeeper's",
    )
    parser.add_argument("--postgres-url", default=default_url)
    parser.add_argument(
        "--show-output", action="store_true", help="print pytest's output"
    )


def report(pool: str, result: Result, show_output: bool) -> None:
    """Print a run's counts (and pytest's output when asked or when it failed)."""
    if show_output or not result.passed:
        print(result.output)
    else:
        # The plugins' lines naming the pool classes the tests got.
        for line in result.output.splitlines():
            if line.startswith("poolkeeper:"):
                print(line)
    print(
        f"{pool}: {result.passed} passed, {len(result.failed)} failed, "
        f"{len(result.skipped)} skipped in {result.seconds:.0f} s"
    )


def compare(
    args: argparse.Namespace,
    run: Callable[[str], Result],
    expected_path: Path,
    rerun: Callable[[list[str]], set[str]] | None = None,
) -> int:
    """Run ``run("stock")`` and ``run("poolkeeper")`` as ``args.pool`` asks
    and judge poolkeeper's failures against ``expected_path``.

    ``rerun``, if given, runs a few unexpected failures again alone and
    returns those that fail again (suites with tight deadlines). Returns the
    exit code: 0 when every poolkeeper-only failure is expected, else 1.
    """
    stock_failed: set[str] = set()
    stock_skipped: set[str] = set()
    if args.pool in ("compare", "stock"):
        stock = run("stock")
        report("stock", stock, args.show_output)
        for test_id in sorted(stock.failed):
            print(f"failed with the stock pool too: {test_id}")
        if args.pool == "stock":
            return 0 if stock.passed else 1
        stock_failed = set(stock.failed)
        stock_skipped = set(stock.skipped)
    result = run("poolkeeper")
    report("poolkeeper", result, args.show_output)
    for test_id in sorted(set(result.skipped) - stock_skipped if stock_skipped else ()):
        print(f"skipped only with poolkeeper: {test_id}")
    expected = expected_failures(expected_path)
    only_poolkeeper = set(result.failed) - stock_failed
    unexpected = sorted(only_poolkeeper - expected)
    if rerun is not None and unexpected and len(unexpected) <= 3:
        again = rerun(unexpected)
        for test_id in unexpected:
            if test_id not in again:
                print(f"passed when run again alone (timing): {test_id}")
        unexpected = sorted(set(unexpected) & again)
    for test_id in sorted(set(result.failed) & stock_failed):
        print(f"failed with both pools: {test_id}")
    for test_id in sorted(only_poolkeeper & expected):
        print(f"expected failure (see {expected_path.name}): {test_id}")
    label = "UNEXPECTED FAILURE" if args.pool == "compare" else "FAILED (not compared)"
    for test_id in unexpected:
        print(f"{label} {test_id}")
    for test_id in sorted(expected - set(result.failed)):
        print(f"now passing (remove from {expected_path.name}): {test_id}")
    if not result.passed:
        return 1
    return 1 if unexpected else 0
