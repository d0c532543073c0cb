"""``poolkeeper check`` pointed at a real PgBouncer notices the proxy."""

from __future__ import annotations

import subprocess
import sys

from tests.support.pgbouncer import PgBouncer


def run_check(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "poolkeeper.cli.main", "check", url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_check_detects_pgbouncer_and_suggests_the_preset(pgbouncer: PgBouncer) -> None:
    proc = run_check(pgbouncer.url)
    out = proc.stdout
    assert "Traceback" not in proc.stderr
    (line,) = [ln for ln in out.splitlines() if "PgBouncer" in ln and "[" in ln]
    assert line.startswith("[warn]"), out
    assert f"port {pgbouncer.port}" in line
    assert f"listens on {pgbouncer.upstream_port}" in line
    assert "PgBouncer preset" in out
    # A warning is not a failure: the connection itself works.
    assert proc.returncode == 0, out + proc.stderr


def test_check_direct_connection_reports_no_pgbouncer(
    pgbouncer: PgBouncer, postgres_url: str
) -> None:
    # The same server PgBouncer fronts, dialled directly.
    proc = run_check(postgres_url)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "none detected" in proc.stdout
