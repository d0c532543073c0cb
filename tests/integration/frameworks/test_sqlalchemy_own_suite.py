"""SQLAlchemy's own pool, engine, session and PostgreSQL dialect tests on poolkeeper's pool.

``tools/sqlalchemy_suite.py`` runs a slice of SQLAlchemy's test suite (from the
sdist of the installed SQLAlchemy, fetched once into ``.cache/`` by
``scripts/test`` or ``tools/sqlalchemy_suite.py --fetch-only``) first with the
stock pool, then with every engine on ``poolkeeper.sqlalchemy.Pool`` /
``AsyncPool``, and fails on any test that fails only with poolkeeper and is
not in ``sqlalchemy_suite_expected.txt``. Without the fetched suite this test
skips locally and fails with ``CI=true``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.conftest import require_db

pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[3]
TOOL = ROOT / "tools" / "sqlalchemy_suite.py"


def _suite_dir() -> Path:
    return ROOT / ".cache" / f"sqlalchemy-{version('sqlalchemy')}"


@pytest.mark.timeout(900)
def test_sqlalchemy_suite_passes_on_poolkeeper(
    postgres_url: str, pytestconfig: pytest.Config
) -> None:
    pytest.importorskip("sqlalchemy")
    if not (_suite_dir() / "test" / "conftest.py").exists():
        message = (
            f"SQLAlchemy's test suite is not in {_suite_dir()}: "
            "run python tools/sqlalchemy_suite.py --fetch-only"
        )
        if require_db(pytestconfig):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    proc = subprocess.run(
        [sys.executable, str(TOOL), "--postgres-url", postgres_url],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-8000:]
    counts = re.search(r"^poolkeeper: (\d+) passed", output, re.MULTILINE)
    assert counts is not None, output[-2000:]
    # The eight files hold about 1,300 tests on SQLAlchemy 2.1.
    assert int(counts.group(1)) >= 1000
    # The engines really ran on poolkeeper's classes (no silent fallback to
    # QueuePool): the last two plugin reports are the poolkeeper run's, sync
    # then asyncio. A few tests ask for a pool class explicitly.
    engines = re.findall(r"^poolkeeper: engines: (.*)$", output, re.MULTILINE)
    assert len(engines) >= 2, output[-2000:]
    sync_line, async_line = engines[-2:]
    on_pool = re.search(r"(\d+) on Pool\b", sync_line)
    on_async = re.search(r"(\d+) on AsyncPool\b", async_line)
    assert on_pool is not None and int(on_pool.group(1)) >= 100, sync_line
    assert on_async is not None and int(on_async.group(1)) >= 50, async_line
