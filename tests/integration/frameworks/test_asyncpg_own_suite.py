"""asyncpg's own pool tests on ``poolkeeper.compat.asyncpg.create_pool``.

``tools/asyncpg_suite.py`` runs ``tests/test_pool.py`` from the sdist of the
installed asyncpg (fetched once into ``.cache/`` by ``scripts/test`` or
``tools/asyncpg_suite.py --fetch-only``), first on asyncpg's own pool, then
with every pool built by poolkeeper's drop-in ``create_pool``, and fails on
any test that fails only with poolkeeper and is not in
``asyncpg_suite_expected.txt``. Without the fetched suite this test skips
locally and fails with ``CI=true``.
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
TOOL = ROOT / "tools" / "asyncpg_suite.py"


@pytest.mark.timeout(600)
def test_asyncpg_pool_suite_passes_on_poolkeeper(
    postgres_url: str, pytestconfig: pytest.Config
) -> None:
    pytest.importorskip("asyncpg")
    suite = ROOT / ".cache" / f"asyncpg-{version('asyncpg')}" / "tests" / "test_pool.py"
    if not suite.exists():
        message = (
            f"asyncpg's tests are not in {suite.parent.parent}: "
            "run python tools/asyncpg_suite.py --fetch-only"
        )
        if require_db(pytestconfig):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    proc = subprocess.run(
        [sys.executable, str(TOOL), "--postgres-url", postgres_url],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-8000:]
    stock = re.search(r"^stock: (\d+) passed", output, re.MULTILINE)
    ours = re.search(r"^poolkeeper: (\d+) passed", output, re.MULTILINE)
    assert stock is not None and ours is not None, output[-2000:]
    # About 60 tests pass on asyncpg's pool (asyncpg 0.32); on poolkeeper's,
    # all but those reading asyncpg's internals.
    assert int(stock.group(1)) >= 50
    assert int(ours.group(1)) >= 30
    # The pools really were poolkeeper's (no silent fallback).
    built = re.search(
        r"^poolkeeper: (\d+) pools on poolkeeper\.compat\.asyncpg\.Pool$",
        output,
        re.MULTILINE,
    )
    assert built is not None and int(built.group(1)) >= 60, output[-2000:]
