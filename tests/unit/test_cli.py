"""The ``poolkeeper`` command line, run as a subprocess against embedded SQLite.

Every command runs the way a user runs it (``python -m poolkeeper.cli.main``),
with short durations. The only network use is a connect to a closed loopback
port, to check the "cannot connect" path.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from poolkeeper.cli import tune
from poolkeeper.cli._common import Target, quantile
from poolkeeper.cli._fixes import connect_fix, root_cause
from poolkeeper.cli._workload import WorkloadResult, WorkloadSpec

SHORT = ["--duration", "0.3", "--no-progress"]


def run_cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "poolkeeper.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int) -> str:
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("poolkeeper ")
    return lines[0]


# -- JSON schema ----------------------------------------------------------------

SUMMARY_KEYS = {"mean", "p50", "p95", "p99", "max"}


def check_bench_schema(doc: dict[str, Any]) -> None:
    """The documented ``poolkeeper.bench/1`` layout (docs/CLI.md)."""
    assert doc["schema"] == "poolkeeper.bench/1"
    assert set(doc) == {
        "schema",
        "poolkeeper_version",
        "build",
        "url",
        "driver",
        "mode",
        "concurrency",
        "pool_size",
        "duration_s",
        "query",
        "results",
        "speedup",
    }
    assert doc["mode"] in ("threads", "asyncio")
    assert doc["build"] in ("compiled", "pure")
    assert isinstance(doc["concurrency"], int)
    assert isinstance(doc["pool_size"], int)
    assert isinstance(doc["duration_s"], float)
    assert doc["speedup"] is None or isinstance(doc["speedup"], float)
    for result in doc["results"]:
        assert set(result) == {
            "workload",
            "pool_size",
            "ops",
            "elapsed_s",
            "ops_per_sec",
            "latency_ms",
            "get_connection_ms",
            "timeline",
        }
        assert result["workload"] in ("pooled", "unpooled")
        assert (result["pool_size"] is None) == (result["workload"] == "unpooled")
        assert isinstance(result["ops"], int)
        assert result["ops"] > 0
        assert result["ops_per_sec"] > 0
        for key in ("latency_ms", "get_connection_ms"):
            summary = result[key]
            assert set(summary) == SUMMARY_KEYS
            assert summary["p50"] <= summary["p95"] <= summary["p99"] <= summary["max"]
        for point in result["timeline"]:
            assert set(point) == {"t_s", "ops_per_sec"}


# -- help and usage ---------------------------------------------------------------


@pytest.mark.parametrize("command", [[], ["bench"], ["tune"], ["check"]])
def test_help_has_examples_and_exit_codes(command):
    proc = run_cli(*command, "--help")
    assert proc.returncode == 0
    assert "usage: poolkeeper" in proc.stdout
    assert "examples:" in proc.stdout or "exit codes:" in proc.stdout


def test_no_command_is_a_usage_error():
    proc = run_cli()
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["bench", "--concurrency", "0"],
        ["bench", "--duration", "-1"],
        ["bench", "--workload", "nope"],
        ["tune", "--sizes", "1,x"],
    ],
)
def test_bad_options_exit_2(args):
    proc = run_cli(*args)
    assert proc.returncode == 2
    assert "error:" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_importing_poolkeeper_and_the_cli_imports_neither_rich_nor_matplotlib():
    code = (
        "import sys, poolkeeper, poolkeeper.cli.main; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('rich', 'matplotlib')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


# -- bench --------------------------------------------------------------------------


def test_bench_default_is_embedded_sqlite_with_a_table():
    proc = run_cli("bench", *SHORT)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "sqlite3" in out
    for word in ("unpooled", "pooled (4)", "ops/s", "p50", "p95", "p99", "speed-up"):
        assert word in out
    assert "x the throughput of connect-per-query" in out


def test_bench_json_schema_and_speedup():
    proc = run_cli("bench", *SHORT, "--concurrency", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    check_bench_schema(doc)
    assert doc["driver"] == "sqlite3"
    assert doc["mode"] == "threads"
    assert doc["concurrency"] == 2
    assert doc["pool_size"] == 2
    assert [r["workload"] for r in doc["results"]] == ["unpooled", "pooled"]
    unpooled, pooled = doc["results"]
    assert doc["speedup"] == pytest.approx(
        pooled["ops_per_sec"] / unpooled["ops_per_sec"]
    )


def test_bench_async_uses_aiosqlite_and_asyncpool():
    proc = run_cli("bench", *SHORT, "--async", "--json", "--pool-size", "2")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    check_bench_schema(doc)
    assert doc["driver"] == "aiosqlite"
    assert doc["mode"] == "asyncio"
    assert doc["url"].startswith("sqlite+aiosqlite:///")
    assert doc["results"][1]["pool_size"] == 2


def test_bench_custom_query_on_a_given_sqlite_file(tmp_path: Path):
    db = tmp_path / "app.db"
    url = f"sqlite:///{db}"
    import sqlite3

    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (x INTEGER)")
        conn.execute("INSERT INTO t VALUES (42)")
    conn.close()
    proc = run_cli(
        "bench",
        *SHORT,
        "--url",
        url,
        "--query",
        "SELECT x FROM t",
        "--workload",
        "pooled",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    check_bench_schema(doc)
    assert doc["query"] == "SELECT x FROM t"
    assert [r["workload"] for r in doc["results"]] == ["pooled"]
    assert doc["speedup"] is None


def test_bench_plot_writes_a_png(tmp_path: Path):
    png = tmp_path / "bench.png"
    proc = run_cli("bench", *SHORT, "--plot", str(png))
    assert proc.returncode == 0, proc.stderr
    assert f"plot written to {png}" in proc.stdout
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 1000


def test_bench_bad_query_exits_1():
    line = assert_one_line_error(run_cli("bench", *SHORT, "--query", "SELEC 1"), 1)
    assert "the query failed" in line
    assert "syntax error" in line


@pytest.mark.parametrize("url", ["nope", "foo://x/y", "postgresql://h:notaport/db"])
def test_bench_bad_url_exits_2_with_one_line(url):
    line = assert_one_line_error(run_cli("bench", *SHORT, "--url", url), 2)
    assert "bad URL" in line


def test_bench_unreachable_server_exits_3_without_password():
    url = f"postgresql://app:s3cret-pw@127.0.0.1:{closed_port()}/db"
    line = assert_one_line_error(run_cli("bench", *SHORT, "--url", url), 3)
    assert "cannot connect" in line
    assert "s3cret-pw" not in line


@pytest.mark.parametrize("where", ["before", "after", "last"])
def test_debug_shows_the_traceback(where):
    url = f"postgresql://app@127.0.0.1:{closed_port()}/db"
    args = ["bench", *SHORT, "--url", url]
    # --debug is global: the same before the command name as after it.
    args.insert({"before": 0, "after": 1, "last": len(args)}[where], "--debug")
    proc = run_cli(*args)
    assert proc.returncode == 3
    assert "Traceback" in proc.stderr


@pytest.mark.parametrize(
    "args", [["bench", "--url", "nope"], ["tune", "--url", "nope"], ["check", "nope"]]
)
def test_debug_means_the_same_before_and_after_the_command_name(args):
    before = run_cli("--debug", *args)
    after = run_cli(*args, "--debug")
    assert before.returncode == after.returncode == 2, before.stderr
    assert (before.stdout, before.stderr) == (after.stdout, after.stderr)
    plain = run_cli(*args)
    if args[0] == "check":  # reports a bad URL as a failed step, no exception
        assert before.stdout == plain.stdout and not before.stderr
    else:
        assert "Traceback" in before.stderr and "bad URL" in before.stderr
        assert "Traceback" not in plain.stderr


def test_async_flag_with_a_sync_only_driver_is_a_usage_error(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    line = assert_one_line_error(run_cli("bench", *SHORT, "--url", url, "--async"), 2)
    assert "sync-only" in line or "cannot be used with AsyncPool" in line


# -- tune ---------------------------------------------------------------------------


def test_tune_table_and_recommendation():
    proc = run_cli(
        "tune", "--duration", "0.2", "--no-progress", "--max-size", "4", "-c", "4"
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "pool size" in out
    assert "recommended: min_size=" in out
    assert "knee of the curve" in out


def test_tune_json_and_plot(tmp_path: Path):
    png = tmp_path / "tune.png"
    proc = run_cli(
        "tune", "--duration", "0.2", "--no-progress", "--sizes", "1,2", "-c", "2",
        "--json", "--plot", str(png),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["schema"] == "poolkeeper.tune/1"
    assert [s["pool_size"] for s in doc["sizes"]] == [1, 2]
    for size in doc["sizes"]:
        assert set(size) == {
            "pool_size",
            "ops",
            "ops_per_sec",
            "p50_ms",
            "p95_ms",
            "p99_ms",
            "wait_p99_ms",
        }
    advice = doc["recommendation"]
    assert 1 <= advice["min_size"] <= advice["max_size"] <= 2
    assert advice["budget_per_process"] is None
    assert doc["server"] is None
    assert advice["reasons"]
    assert png.stat().st_size > 1000


# -- check --------------------------------------------------------------------------


def test_check_sqlite_file(tmp_path: Path):
    db = tmp_path / "ok.db"
    import sqlite3

    sqlite3.connect(db).close()
    proc = run_cli("check", f"sqlite:///{db}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[ ok ] URL" in proc.stdout
    assert "SQLite 3." in proc.stdout
    assert "round trip" in proc.stdout
    assert "all checks passed" in proc.stdout


def test_check_bad_url_exits_2():
    proc = run_cli("check", "nonsense")
    assert proc.returncode == 2
    assert "[FAIL] URL" in proc.stdout
    assert "fix:" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr


def test_check_closed_port_exits_3_with_a_fix_and_no_password():
    proc = run_cli("check", f"postgresql://app:hunter2@127.0.0.1:{closed_port()}/db")
    assert proc.returncode == 3
    assert "[ ok ] DNS" in proc.stdout
    assert "[FAIL] TCP connect" in proc.stdout
    assert "fix: start the server" in proc.stdout
    assert "hunter2" not in proc.stdout + proc.stderr
    assert "app:***@" in proc.stdout


# -- in-process pieces ----------------------------------------------------------------


def fake_result(size: int, ops_per_sec: float) -> WorkloadResult:
    target = Target("sqlite://", "sqlite://", None, "sqlite3", False)  # type: ignore[arg-type]
    spec = WorkloadSpec(target, "SELECT 1", 16, 1.0, size)
    ops = int(ops_per_sec)
    return WorkloadResult(spec, 1.0, [0.001] * ops, [0.0] * ops, [])


def test_recommend_picks_the_knee_and_caps_by_the_server_budget():
    results = [
        fake_result(s, r)
        for s, r in [(1, 100), (2, 190), (4, 350), (8, 390), (16, 400)]
    ]
    advice = tune.recommend(results, budget=None, processes=1, concurrency=16)
    assert advice.knee == 8  # 390 >= 95% of 400
    assert advice.max_size == 8
    assert advice.min_size == 4  # smallest size reaching 50% of the peak
    capped = tune.recommend(results, budget=6, processes=4, concurrency=16)
    assert capped.max_size == 6
    assert capped.min_size == 4
    assert any("4 processes" in r for r in capped.reasons)


def test_sweep_sizes_are_powers_of_two_then_the_maximum():
    assert tune.sweep_sizes(1) == [1]
    assert tune.sweep_sizes(16) == [1, 2, 4, 8, 16]
    assert tune.sweep_sizes(20) == [1, 2, 4, 8, 16, 20]


def test_quantile_nearest_rank():
    data = [float(i) for i in range(1, 101)]
    assert quantile(data, 0.5) == 50.0
    assert quantile(data, 0.99) == 99.0
    assert quantile([], 0.5) == 0.0


@pytest.mark.parametrize(
    ("message", "hint"),
    [
        ('FATAL:  password authentication failed for user "x"', "password"),
        ('FATAL:  database "nope" does not exist', "create the database"),
        ("FATAL:  sorry, too many clients already", "max_connections"),
        ("something new", "--debug"),
        ('FATAL:  role "ghost" does not exist', "CREATE ROLE"),
        (
            "(1045, \"Access denied for user 'u'@'10.0.0.1' (using password: YES)\")",
            "'user'@'host'",
        ),
        ("(1049, \"Unknown database 'nope'\")", "CREATE DATABASE"),
        ("(1044, \"Access denied for user 'u'@'%' to database 'd'\")", "GRANT"),
        (
            "(1130, \"Host '10.1.1.1' is not allowed to connect to this MariaDB server\")",
            "CREATE USER",
        ),
        ("(1040, 'Too many connections')", "max_connections"),
        (
            "(2003, \"Can't connect to MySQL server on '127.0.0.1' ([Errno 111] Connection refused)\")",
            "start the server",
        ),
        ("unable to open database file", "directory must exist"),
        ("file is not a database", "not an SQLite database"),
        ("attempt to write a readonly database", "writable"),
        ("database is locked", "busy timeout"),
    ],
)
def test_connect_fix_hints(message, hint):
    assert hint in connect_fix(message)


def test_bench_shows_a_live_progress_bar_on_a_terminal():
    # stderr is a pseudo-terminal, as when a user runs the command; stdout
    # stays a pipe, so the table is still plain text there.
    import os
    import pty

    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "poolkeeper.cli.main", "bench", "--duration", "1"],
            stdout=subprocess.PIPE,
            stderr=follower,
            text=True,
            env={**os.environ, "COLUMNS": "100", "TERM": "xterm"},
        )
        os.close(follower)
        follower = -1
        seen = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        stdout, _ = proc.communicate(timeout=60)
    finally:
        os.close(leader)
        if follower != -1:
            os.close(follower)
    assert proc.returncode == 0
    text = seen.decode("utf-8", "replace")
    assert "unpooled" in text and "pooled" in text  # one bar per workload
    assert "ops/s" in text  # the live rate beside the bar
    assert "speed-up" in stdout.lower() or "speedup" in stdout.lower(), stdout


def test_check_debug_shows_the_whole_driver_error(mysql_url: str) -> None:
    # A PostgreSQL driver talking to the MariaDB port: the TCP step passes and
    # the driver fails with an error no hint matches.
    port = urlsplit(mysql_url).port or 3306
    url = f"postgresql+psycopg2://u:hunter2@127.0.0.1:{port}/db?sslmode=disable"
    plain = run_cli("check", url)
    debug = run_cli("check", "--debug", url)
    assert plain.returncode == debug.returncode == 3
    assert "[FAIL] connect" in plain.stdout and "[FAIL] connect" in debug.stdout
    assert "fix: run with --debug for the full driver error" in plain.stdout
    assert "run with --debug" not in debug.stdout
    assert "OperationalError / " in debug.stdout
    assert "hunter2" not in plain.stdout + plain.stderr + debug.stdout + debug.stderr


# -- tune's explanation agrees with its table (issue 16, item 9) --------------------


def test_tune_reasons_use_the_tables_shares_for_min_size():
    # Size 8 is just under half the peak: the table shows 49.9 %, and the text
    # must say why 16 (not 8) is the smallest size serving half the peak.
    results = [fake_result(s, r) for s, r in [(4, 300), (8, 499), (16, 1000)]]
    advice = tune.recommend(results, budget=None, processes=1, concurrency=32)
    assert advice.min_size == 16
    text = " ".join(advice.reasons)
    assert tune.percent(499 / 1000) == "49.9%"
    assert "size 8 reached 49.9%" in text
    assert "size 16 is the smallest reaching 50% of the peak (100.0%)" in text


def test_tune_static_pool_does_not_claim_to_grow_and_one_process_is_singular():
    results = [fake_result(s, r) for s, r in [(1, 100), (2, 400)]]
    advice = tune.recommend(results, budget=90, processes=1, concurrency=2)
    assert advice.min_size == advice.max_size == 2
    text = " ".join(advice.reasons)
    assert "grows to max_size" not in text
    assert "static pool that neither grows nor shrinks" in text
    assert "1 processes" not in text
    assert "for this one process" in text
    dynamic = tune.recommend(
        [fake_result(s, r) for s, r in [(1, 300), (2, 390), (4, 400)]],
        budget=None,
        processes=1,
        concurrency=4,
    )
    assert (dynamic.min_size, dynamic.max_size) == (1, 2)
    assert "grows to max_size 2 and shrinks back" in " ".join(dynamic.reasons)


def test_plot_titles_name_concurrency_and_pool_size():
    import argparse

    from poolkeeper.cli import bench

    target = Target("sqlite://", "sqlite://", None, "sqlite3", False)  # type: ignore[arg-type]
    args = argparse.Namespace(concurrency=12, query="SELECT 1")
    title = bench.plot_title(target, args, 5)
    assert "12 threads" in title and "pool of 5" in title
    results = [fake_result(s, r) for s, r in [(1, 100), (4, 400)]]
    advice = tune.recommend(results, budget=None, processes=1, concurrency=12)
    title = tune.plot_title(target, args, advice)
    assert "12 threads" in title and "max_size=4" in title


def test_bench_names_the_build_it_measured():
    import poolkeeper._core.state

    expected = "compiled" if poolkeeper._core.state.__file__.endswith(".so") else "pure"
    proc = run_cli("bench", *SHORT, "-c", "2", "--workload", "pooled")
    assert proc.returncode == 0, proc.stderr
    assert f"{expected} build)" in proc.stdout.splitlines()[0]
    proc = run_cli("bench", *SHORT, "-c", "2", "--workload", "pooled", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["build"] == expected


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("/site/poolkeeper/_core/state.cpython-311-x86_64-linux-gnu.so", "compiled"),
        ("/site/poolkeeper/_core/state.abi3.so", "compiled"),
        ("C:/site/poolkeeper/_core/state.cp311-win_amd64.pyd", "compiled"),
        ("/site/poolkeeper/_core/state.py", "pure"),
        ("/site/poolkeeper/_core/__pycache__/state.cpython-311.pyc", "pure"),
        (None, "pure"),
    ],
)
def test_build_is_read_from_the_core_module_file(
    monkeypatch: pytest.MonkeyPatch, filename: str | None, expected: str
):
    import importlib.machinery
    import types

    from poolkeeper.cli import bench

    # The suffixes of every platform in the table, whatever this one accepts.
    suffixes = [".cpython-311-x86_64-linux-gnu.so", ".abi3.so", ".so", ".pyd"]
    monkeypatch.setattr(importlib.machinery, "EXTENSION_SUFFIXES", suffixes)
    module = types.ModuleType("state")
    if filename is not None:
        module.__file__ = filename
    assert bench.build(module) == expected


def test_bench_on_sqlite_says_a_connect_is_a_file_open():
    proc = run_cli("bench", *SHORT, "-c", "2")
    assert proc.returncode == 0, proc.stderr
    assert "SQLite connect is only a file open" in proc.stdout
    assert "--url" in proc.stdout and "--plot" in proc.stdout


def test_root_cause_walks_pool_errors_only():
    import poolkeeper

    driver_error = OSError("connection refused")
    timeout = poolkeeper.PoolTimeout("timed out")
    timeout.__cause__ = driver_error
    assert root_cause(timeout) is driver_error
    plain = ValueError("x")
    plain.__cause__ = driver_error
    assert root_cause(plain) is plain  # a driver's own chain is left alone


def test_version_option_prints_the_package_version():
    import poolkeeper

    proc = run_cli("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"poolkeeper {poolkeeper.__version__}"
    module = subprocess.run(
        [sys.executable, "-m", "poolkeeper", "--version"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert module.stdout == proc.stdout
