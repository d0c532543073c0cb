"""Run a slice of SQLAlchemy's own test suite with every engine on poolkeeper's pool.

SQLAlchemy's wheel does not ship its tests; its source distribution does.
This tool downloads the sdist of the *installed* SQLAlchemy version once (with
pip, into ``.cache/``), then runs SQLAlchemy's pytest suite there on the
local PostgreSQL: the synchronous files with psycopg, the asyncio file with
asyncpg. The pytest plugin
``tests/integration/frameworks/sqlalchemy_suite_plugin.py`` puts every engine
on :class:`poolkeeper.sqlalchemy.Pool` (``AsyncPool`` for asyncio) and prints
the classes the engines got; ``--pool stock`` runs the same slice on
SQLAlchemy's own pools for comparison.

Usage::

    python tools/sqlalchemy_suite.py --fetch-only       # download only
    python tools/sqlalchemy_suite.py                    # stock, then poolkeeper
    python tools/sqlalchemy_suite.py --pool poolkeeper  # poolkeeper's pool only
    python tools/sqlalchemy_suite.py --pool stock       # SQLAlchemy's pool only

By default (``--pool compare``) it runs the slice with the stock pool, then
with poolkeeper's, prints passed/failed/skipped counts for both, and checks
every test that fails only with poolkeeper against the checked-in list
``tests/integration/frameworks/sqlalchemy_suite_expected.txt`` (each with the
QueuePool internal it relies on). Tests failing with the stock pool too fail
for reasons of the environment (server settings such as
``max_prepared_transactions``, multiple hosts) and are not poolkeeper's.
The exit code is 0 when every poolkeeper-only failure is listed, 1
otherwise, 2 when the suite is missing. ``tests/integration/frameworks/test_sqlalchemy_own_suite.py`` runs it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

from _own_suite import Result, add_arguments, compare, run_pytest
from _sdist import extract_sdist

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache"
EXPECTED = (
    ROOT / "tests" / "integration" / "frameworks" / "sqlalchemy_suite_expected.txt"
)
PLUGIN = "tests.integration.frameworks.sqlalchemy_suite_plugin"

#: The files of SQLAlchemy's suite that exercise how a pool opens, checks,
#: hands out, invalidates and disposes of connections, per driver.
SYNC_FILES = [
    "test/engine/test_pool.py",
    "test/engine/test_reconnect.py",
    "test/engine/test_transaction.py",
    "test/engine/test_execute.py",
    "test/orm/test_transaction.py",
    "test/orm/test_session.py",
    "test/dialect/postgresql/test_dialect.py",
]
ASYNC_FILES = ["test/ext/asyncio/test_engine.py"]
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


def source_dir(sa_version: str | None = None) -> Path:
    """Where the unpacked SQLAlchemy sdist for ``sa_version`` lives."""
    return CACHE / f"sqlalchemy-{sa_version or version('sqlalchemy')}"


def fetch(sa_version: str | None = None) -> Path:
    """Download and unpack SQLAlchemy's sdist unless already there."""
    sa_version = sa_version or version("sqlalchemy")
    src = source_dir(sa_version)
    if (src / "test" / "conftest.py").exists():
        return src
    top = f"sqlalchemy-{sa_version}/"
    wanted = ("test/", "lib/", "setup.cfg", "pyproject.toml")
    CACHE.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        extract_sdist(
            f"sqlalchemy=={sa_version}",
            Path(tmp),
            lambda name: name.startswith(top) and name[len(top) :].startswith(wanted),
        )
        # Moved into place only when complete, so a half-unpacked tree is
        # never taken for the suite.
        (Path(tmp) / top.rstrip("/")).rename(src)
    return src


def with_driver(url: str, driver: str) -> str:
    """Rewrite ``postgresql://...`` to ``postgresql+<driver>://...``."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme.partition('+')[0]}+{driver}{sep}{rest}"


#: The database the slice runs in, next to the one given: SQLAlchemy's tests
#: create and drop common table names (``users``, ``addresses``) that other
#: test runs on a shared server may be using at the same time; one database
#: per run (named after the process), dropped at the end, so that two runs at
#: once (two developers, two CI jobs) cannot break each other.
SUITE_DATABASE = f"pk_sqlalchemy_suite_{os.getpid()}"


def run_files(files: list[str], dburi: str, pool: str, src: Path) -> Result:
    """Run SQLAlchemy's pytest on ``files`` against ``dburi``; return the outcome."""
    return run_pytest(
        src,
        PLUGIN,
        [f"--dburi={dburi}", *files],
        {"POOLKEEPER_SQLA_POOL": pool},
        [str(ROOT / "src"), str(ROOT)],
        timeout=300,
    )


def prepare(postgres_url: str) -> str:
    """Create the suite's database, extensions and schemas; return its URL.

    Each pytest run issues ``CREATE EXTENSION IF NOT EXISTS`` for the
    extensions; two runs at once race on it and one fails with a duplicate
    key, so they are created here, once, up front.
    """
    import psycopg

    # DuplicateDatabase, UniqueViolation: created by a concurrent session.
    created_meanwhile = (
        psycopg.errors.DuplicateDatabase,
        psycopg.errors.UniqueViolation,
    )
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (SUITE_DATABASE,)
        ).fetchone()
        if exists is None:
            with contextlib.suppress(*created_meanwhile):
                conn.execute(f"CREATE DATABASE {SUITE_DATABASE}")
    suite_url = postgres_url.rsplit("/", 1)[0] + "/" + SUITE_DATABASE
    with psycopg.connect(suite_url, autocommit=True) as conn:
        for statement in (
            "CREATE EXTENSION IF NOT EXISTS citext",
            "CREATE EXTENSION IF NOT EXISTS hstore",
            # The schemas README.unittests.rst asks for.
            "CREATE SCHEMA IF NOT EXISTS test_schema",
            "CREATE SCHEMA IF NOT EXISTS test_schema_2",
        ):
            with contextlib.suppress(*created_meanwhile):
                conn.execute(statement)
    return suite_url


def run(pool: str, postgres_url: str) -> Result:
    """Run the sync slice, then the asyncio slice; return the merged outcome.

    One after the other: both create and drop the same tables (``users``)
    in the suite's database (see :data:`SUITE_DATABASE`).
    """
    src = source_dir()
    suite_url = prepare(postgres_url)
    total = Result()
    try:
        for files, driver in ((SYNC_FILES, "psycopg"), (ASYNC_FILES, "asyncpg")):
            total.add(run_files(files, with_driver(suite_url, driver), pool, src))
    finally:
        drop(postgres_url)
    return total


def drop(postgres_url: str) -> None:
    """Drop this run's database (:data:`SUITE_DATABASE`)."""
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {SUITE_DATABASE} WITH (FORCE)")


def main() -> int:
    """Parse arguments, fetch the suite if needed, run it and report."""
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    add_arguments(parser, DEFAULT_URL)
    args = parser.parse_args()
    if args.fetch_only:
        print(f"SQLAlchemy test suite ready in {fetch()}")
        return 0
    if not (source_dir() / "test" / "conftest.py").exists():
        print(f"{source_dir()} is missing: run tools/sqlalchemy_suite.py --fetch-only")
        return 2
    return compare(args, lambda pool: run(pool, args.postgres_url), EXPECTED)


if __name__ == "__main__":
    sys.exit(main())
