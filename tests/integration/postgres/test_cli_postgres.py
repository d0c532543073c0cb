"""The ``poolkeeper`` command line against the real PostgreSQL server.

The ``postgres_url`` fixture (tests/conftest.py) skips these tests when the
server is down, saying how to start it (pg_ctlcluster --skip-systemctl-redirect
15 main start), and fails them instead with ``CI=true`` or ``--require-db``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

SHORT = ["--duration", "0.3", "--no-progress"]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "poolkeeper.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def with_scheme(url: str, scheme: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((scheme, *parts[1:]))


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, ""))


def test_bench_psycopg_threads_pooled_beats_unpooled(postgres_url):
    proc = run_cli("bench", "--url", postgres_url, *SHORT, "-c", "4", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["schema"] == "poolkeeper.bench/1"
    assert doc["driver"] == "psycopg"
    assert doc["mode"] == "threads"
    unpooled, pooled = doc["results"]
    assert unpooled["workload"] == "unpooled"
    assert unpooled["ops"] > 0
    assert pooled["ops"] > 0
    # A PostgreSQL connect costs milliseconds (fork, auth); a pooled SELECT 1
    # well under one. Even on a loaded machine pooling wins by a wide margin.
    assert doc["speedup"] > 2
    assert unpooled["get_connection_ms"]["p50"] > pooled["get_connection_ms"]["p50"]


def test_bench_asyncpg_url_selects_asyncio_and_writes_a_plot(
    postgres_url, tmp_path: Path
):
    png = tmp_path / "bench.png"
    url = with_scheme(postgres_url, "postgresql+asyncpg")
    proc = run_cli(
        "bench",
        "--url",
        url,
        *SHORT,
        "-c",
        "16",
        "--pool-size",
        "4",
        "--plot",
        str(png),
    )
    assert proc.returncode == 0, proc.stderr
    assert "asyncpg, 16 asyncio tasks" in proc.stdout
    assert "pooled (4)" in proc.stdout
    assert png.stat().st_size > 1000


def test_bench_psycopg_async(postgres_url):
    proc = run_cli(
        "bench", "--url", postgres_url, "--async", *SHORT, "-c", "4", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert (doc["driver"], doc["mode"]) == ("psycopg", "asyncio")


def test_bench_query_error_exits_1(postgres_url):
    proc = run_cli(
        "bench", "--url", postgres_url, *SHORT, "--query", "SELECT * FROM no_such_table"
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "no_such_table" in proc.stderr


def test_bench_missing_database_exits_3(postgres_url):
    proc = run_cli(
        "bench", "--url", with_database(postgres_url, "pk_no_such_db"), *SHORT
    )
    assert proc.returncode == 3
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "does not exist" in proc.stderr


def test_tune_reads_max_connections_and_divides_by_processes(
    postgres_url, tmp_path: Path
):
    png = tmp_path / "tune.png"
    proc = run_cli(
        "tune", "--url", postgres_url, "--duration", "0.2", "--no-progress",
        "--sizes", "1,2,4", "-c", "4", "--processes", "3", "--json", "--plot", str(png),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    server = doc["server"]
    assert server["max_connections"] >= 10
    usable = server["max_connections"] - server["reserved_connections"]
    advice = doc["recommendation"]
    assert advice["budget_per_process"] == usable // 3
    assert 1 <= advice["min_size"] <= advice["max_size"] <= 4
    assert any("3 processes" in reason for reason in advice["reasons"])
    assert png.stat().st_size > 1000


def test_tune_table_output(postgres_url):
    proc = run_cli(
        "tune", "--url", postgres_url, "--duration", "0.2", "--no-progress", "--max-size", "2", "-c", "2"
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "recommended: min_size=" in proc.stdout
    assert "max_connections minus reserved" in proc.stdout


def test_check_reports_every_step(postgres_url):
    proc = run_cli("check", postgres_url)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for step in (
        "URL",
        "DNS",
        "TCP connect",
        "connect",
        "server",
        "connections",
        "PgBouncer",
        "round trip",
    ):
        assert step in out
    assert "TLS" in out
    assert "PostgreSQL 1" in out
    assert "max_connections=" in out
    assert "none detected" in out
    assert "all checks passed" in out


def test_check_asyncpg(postgres_url):
    proc = run_cli("check", with_scheme(postgres_url, "postgresql+asyncpg"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "driver asyncpg" in proc.stdout


def test_check_missing_database_exits_3_with_a_fix(postgres_url):
    proc = run_cli("check", with_database(postgres_url, "pk_no_such_db"))
    assert proc.returncode == 3
    assert "[FAIL] connect" in proc.stdout
    assert "fix: create the database" in proc.stdout


def test_check_never_prints_the_password(postgres_url):
    parts = urlsplit(postgres_url)
    user = parts.username or "postgres"
    netloc = f"{user}:pk-secret-pw@{parts.hostname}:{parts.port or 5432}"
    url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
    proc = run_cli("check", url)
    # With trust authentication the password is ignored and the check passes;
    # with password authentication it fails at connect. Either way it stays secret.
    assert proc.returncode in (0, 3)
    assert "pk-secret-pw" not in proc.stdout + proc.stderr
    assert ":***@" in proc.stdout
