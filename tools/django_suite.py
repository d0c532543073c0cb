"""Run a part of Django's own test suite on the poolkeeper Django backend.

Django's wheel does not ship its tests, but its source distribution does.
This tool downloads the sdist of the *installed* Django version once (with
pip, into ``.cache/``), then runs Django's ``runtests.py`` with the settings in
``tests/integration/frameworks/django_suite_settings.py``: both database
aliases on ``poolkeeper.django.postgresql`` against the real PostgreSQL, or
with ``--backend mysql`` on ``poolkeeper.django.mysql`` against the real
MariaDB/MySQL. ``--stock`` runs the same on Django's own backend (no pool),
to compare counts.

Usage::

    python tools/django_suite.py --fetch-only          # download only
    python tools/django_suite.py                       # the default subset
    python tools/django_suite.py --backend mysql       # the same on MariaDB
    python tools/django_suite.py queries expressions   # any Django test labels

The exit code is runtests.py's (0 when every selected test passed or was
skipped). ``tests/integration/frameworks/test_django_own_suite.py`` runs the
default subset.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from _sdist import extract_sdist

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache"

#: Django's database-backend and transaction tests: the parts of its suite
#: that exercise how a backend opens, reuses, commits and closes connections.
DEFAULT_LABELS = [
    "backends",
    "transactions",
    "transaction_hooks",
    "select_for_update",
    "get_or_create",
    "basic",
    "delete_regress",
]


def source_dir(django_version: str | None = None) -> Path:
    """Where the unpacked Django test suite for ``django_version`` lives."""
    return CACHE / f"django-{django_version or version('django')}" / "tests"


def fetch(django_version: str | None = None) -> Path:
    """Download and unpack Django's sdist (tests only) unless already there."""
    django_version = django_version or version("django")
    tests = source_dir(django_version)
    if (tests / "runtests.py").exists():
        return tests
    prefix = f"django-{django_version}/tests/"
    extract_sdist(
        f"django=={django_version}", CACHE, lambda name: name.startswith(prefix)
    )
    return tests


#: --backend choices: Django vendor names.
BACKENDS = ("postgresql", "mysql")


def run(
    labels: list[str],
    postgres_url: str | None = None,
    *,
    backend: str = "postgresql",
    mysql_url: str | None = None,
    stock: bool = False,
) -> int:
    """Run Django's ``runtests.py`` on ``labels``; return its exit code.

    ``backend`` is ``"postgresql"`` or ``"mysql"``; ``stock`` swaps
    poolkeeper's backend for Django's own (no pool).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
    tests = source_dir()
    if not (tests / "runtests.py").exists():
        print(f"{tests} is missing: run tools/django_suite.py --fetch-only first")
        return 2
    env = dict(os.environ)
    # The poolkeeper sources and this repository's tests package (settings).
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "src"), str(ROOT), *filter(None, [env.get("PYTHONPATH")])]
    )
    if postgres_url:
        env["POOLKEEPER_TEST_POSTGRES_URL"] = postgres_url
    if mysql_url:
        env["POOLKEEPER_TEST_MYSQL_URL"] = mysql_url
    env["POOLKEEPER_DJANGO_BACKEND"] = backend
    env["POOLKEEPER_DJANGO_STOCK"] = "1" if stock else ""
    command = [
        sys.executable,
        "runtests.py",
        "--settings=tests.integration.frameworks.django_suite_settings",
        "--parallel=1",
        "--noinput",
        *labels,
    ]
    return subprocess.run(command, cwd=tests, env=env, check=False).returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("labels", nargs="*", help="Django test labels")
    parser.add_argument("--fetch-only", action="store_true")
    parser.add_argument("--backend", choices=BACKENDS, default="postgresql")
    parser.add_argument("--postgres-url", default=None)
    parser.add_argument("--mysql-url", default=None)
    parser.add_argument(
        "--stock", action="store_true", help="Django's own backend, no pool"
    )
    args = parser.parse_args()
    fetch()
    if args.fetch_only:
        print(f"Django test suite ready in {source_dir()}")
        return 0
    return run(
        args.labels or DEFAULT_LABELS,
        args.postgres_url,
        backend=args.backend,
        mysql_url=args.mysql_url,
        stock=args.stock,
    )


if __name__ == "__main__":
    sys.exit(main())
