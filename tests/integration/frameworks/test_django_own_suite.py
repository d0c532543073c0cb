"""Django's own backend and transaction tests, run on the poolkeeper backends.

``tools/django_suite.py`` runs Django's ``runtests.py`` (from the sdist of the
installed Django, fetched once into ``.cache/`` by ``scripts/test`` or
``tools/django_suite.py --fetch-only``) with both database aliases on
``poolkeeper.django.postgresql`` (against PostgreSQL) or
``poolkeeper.django.mysql`` (against MariaDB). Without the fetched suite this
test skips locally and fails with ``CI=true``, as does a server that is down.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import import_driver, require_db

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[3]
TOOL = ROOT / "tools" / "django_suite.py"


def _suite_dir() -> Path:
    from importlib.metadata import version

    return ROOT / ".cache" / f"django-{version('django')}" / "tests"


@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    ("backend", "url_fixture", "driver"),
    [
        pytest.param(
            "postgresql", "postgres_url", "psycopg", marks=pytest.mark.postgres
        ),
        pytest.param("mysql", "mysql_url", "MySQLdb", marks=pytest.mark.mysql),
    ],
)
def test_django_backend_and_transaction_tests_pass(
    backend: str, url_fixture: str, driver: str, request: pytest.FixtureRequest
) -> None:
    pytest.importorskip("django")
    url: str = request.getfixturevalue(url_fixture)
    import_driver(request.config, driver)
    if not (_suite_dir() / "runtests.py").exists():
        message = (
            f"Django's test suite is not in {_suite_dir()}: "
            "run python tools/django_suite.py --fetch-only"
        )
        if require_db(request.config):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    proc = subprocess.run(
        [
            sys.executable,
            str(TOOL),
            "--backend",
            backend,
            f"--{url_fixture.replace('_', '-')}",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-5000:]
    ran = re.search(r"^Ran (\d+) tests", output, re.MULTILINE)
    assert ran is not None, output[-2000:]
    # backends, transactions, transaction_hooks, select_for_update,
    # get_or_create, basic, delete_regress: 623 tests on Django 5.2.
    assert int(ran.group(1)) >= 500
    assert re.search(r"^OK\b", output, re.MULTILINE), output[-2000:]
    # The backend really was poolkeeper's (no silent fallback to Django's).
    wrapper = f"poolkeeper.django.{backend}.base.DatabaseWrapper"
    assert f"Django backend: {wrapper}" in output, output[-2000:]
