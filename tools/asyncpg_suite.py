"""Run asyncpg's own pool tests with every pool from ``poolkeeper.compat.asyncpg``.

asyncpg's wheel does not ship its tests; its source distribution does. This
tool downloads the sdist of the *installed* asyncpg version once (with pip,
into ``.cache/``; only ``tests/``), then runs ``tests/test_pool.py`` on the
local PostgreSQL (asyncpg's harness uses a running server when ``PGHOST`` is
set, instead of creating a cluster). The pytest plugin
``tests/integration/frameworks/asyncpg_suite_plugin.py`` makes the harness's
``create_pool`` (and ``asyncpg.create_pool``) build
:func:`poolkeeper.compat.asyncpg.create_pool` pools; ``--pool stock`` runs the
same file on asyncpg's own pool for comparison.

Usage::

    python tools/asyncpg_suite.py --fetch-only       # download only
    python tools/asyncpg_suite.py                    # stock, then poolkeeper
    python tools/asyncpg_suite.py --pool poolkeeper  # poolkeeper's pool only

By default (``--pool compare``) every test that fails only with poolkeeper
must be listed, with its reason, in
``tests/integration/frameworks/asyncpg_suite_expected.txt``. The exit code is
0 when it is, 1 otherwise, 2 when the suite is missing.
``tests/integration/frameworks/test_asyncpg_own_suite.py`` runs it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path
from urllib.parse import urlsplit

from _own_suite import Result, add_arguments, compare, run_pytest
from _sdist import extract_sdist

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache"
FRAMEWORKS = ROOT / "tests" / "integration" / "frameworks"
EXPECTED = FRAMEWORKS / "asyncpg_suite_expected.txt"
PLUGIN = "asyncpg_suite_plugin"
FILES = ["tests/test_pool.py"]
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


def source_dir(apg_version: str | None = None) -> Path:
    """Where the unpacked asyncpg tests for ``apg_version`` live."""
    return CACHE / f"asyncpg-{apg_version or version('asyncpg')}"


def fetch(apg_version: str | None = None) -> Path:
    """Download asyncpg's sdist and unpack its ``tests/`` unless already there."""
    apg_version = apg_version or version("asyncpg")
    src = source_dir(apg_version)
    if (src / FILES[0]).exists():
        return src
    top = f"asyncpg-{apg_version}/"
    CACHE.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        extract_sdist(
            f"asyncpg=={apg_version}",
            Path(tmp),
            lambda name: name.startswith(top + "tests/"),
        )
        # Only the tests: the installed (compiled) asyncpg is the one tested.
        # An empty pytest.ini keeps poolkeeper's pytest settings out.
        (Path(tmp) / top / "pytest.ini").write_text("[pytest]\n")
        (Path(tmp) / top.rstrip("/")).rename(src)
    return src


def run(pool: str, postgres_url: str, files: list[str] = FILES) -> Result:
    """Run asyncpg's pool tests (``files``: paths or test ids) with ``pool``."""
    parts = urlsplit(postgres_url)
    env = {
        "POOLKEEPER_ASYNCPG_POOL": pool,
        "PGHOST": parts.hostname or "127.0.0.1",
        "PGPORT": str(parts.port or 5432),
        "PGUSER": parts.username or "postgres",
        "PGDATABASE": "postgres",  # the tests name it themselves
    }
    if parts.password:
        env["PGPASSWORD"] = parts.password
    return run_pytest(
        source_dir(), PLUGIN, files, env, [str(ROOT / "src"), str(FRAMEWORKS)], 120
    )


def _node_id(test_id: str) -> str:
    """``tests.test_pool.TestPool::test_x`` -> ``tests/test_pool.py::TestPool::test_x``."""
    classname, _, name = test_id.partition("::")
    module, _, cls = classname.rpartition(".")
    return f"{module.replace('.', '/')}.py::{cls}::{name}"


def main() -> int:
    """Parse arguments, fetch the suite if needed, run it and report."""
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    add_arguments(parser, DEFAULT_URL)
    args = parser.parse_args()
    if args.fetch_only:
        print(f"asyncpg's tests ready in {fetch()}")
        return 0
    if not (source_dir() / FILES[0]).exists():
        print(f"{source_dir()} is missing: run tools/asyncpg_suite.py --fetch-only")
        return 2

    def rerun(test_ids: list[str]) -> set[str]:
        # Several of asyncpg's tests have 10-50 ms deadlines: on a loaded
        # machine one may miss it once. A test that fails again alone is a
        # real difference.
        ids = [_node_id(test_id) for test_id in test_ids]
        return set(run("poolkeeper", args.postgres_url, ids).failed)

    return compare(args, lambda pool: run(pool, args.postgres_url), EXPECTED, rerun)


if __name__ == "__main__":
    sys.exit(main())
