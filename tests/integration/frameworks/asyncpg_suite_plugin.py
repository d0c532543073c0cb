"""pytest plugin for asyncpg's own pool tests: every pool from poolkeeper.

``tools/asyncpg_suite.py`` loads it with ``-p`` into a pytest run of
``tests/test_pool.py`` from the unpacked asyncpg sdist. With
``POOLKEEPER_ASYNCPG_POOL=poolkeeper`` (the default) the test harness's
``create_pool`` (``asyncpg._testbase.create_pool``, behind every
``self.create_pool(...)``) and ``asyncpg.create_pool`` build
:func:`poolkeeper.compat.asyncpg.create_pool` pools instead. With ``stock``
nothing is changed, for the comparison run.

What the harness needs of a pool beyond asyncpg's public API is given here,
not in poolkeeper: its ``tearDown`` awaits ``pool._maintenance_task`` after
``terminate()``, which for poolkeeper's pool is the task finishing the
shutdown. A test that asks for its own ``pool_class`` (a subclass of
asyncpg's ``Pool``) is about that class and keeps it.

The end of the run reports how many pools were built on each class, so that
a silent fallback to asyncpg's own pool is visible.
"""

from __future__ import annotations

import collections
import os
from typing import Any

import pytest

MODE = os.environ.get("POOLKEEPER_ASYNCPG_POOL", "poolkeeper")
_counts: collections.Counter[str] = collections.Counter()


def _harness_pool_class() -> type[Any]:
    from poolkeeper.compat import asyncpg as compat

    class HarnessPool(compat.Pool):
        """poolkeeper's compat pool with the attribute asyncpg's harness reads."""

        @property
        def _maintenance_task(self) -> Any:
            return self._shutdown

    return HarnessPool


def _install() -> None:
    import asyncpg
    from asyncpg import _testbase
    from asyncpg import pool as pg_pool

    from poolkeeper.compat import asyncpg as compat

    harness_class = _harness_pool_class()
    stock_harness = _testbase.create_pool
    stock_public = asyncpg.create_pool

    def create(dsn: Any = None, **kwargs: Any) -> Any:
        kwargs.pop("loop", None)  # asyncpg ignores it too (deprecated)
        pool = compat.create_pool(dsn, **kwargs)
        pool.__class__ = harness_class
        _counts["poolkeeper.compat.asyncpg.Pool"] += 1
        return pool

    def create_harness(
        dsn: Any = None, *, pool_class: Any = None, **kwargs: Any
    ) -> Any:
        if pool_class not in (None, pg_pool.Pool):
            _counts[f"{pool_class.__module__}.{pool_class.__qualname__}"] += 1
            return stock_harness(dsn, pool_class=pool_class, **kwargs)
        return create(dsn, **kwargs)

    def create_public(dsn: Any = None, **kwargs: Any) -> Any:
        return create(dsn, **kwargs)

    _testbase.create_pool = create_harness
    asyncpg.create_pool = create_public
    assert stock_public is not None


def pytest_configure(config: pytest.Config) -> None:
    if MODE == "poolkeeper":
        _install()


def pytest_report_header(config: pytest.Config) -> str:
    return f"poolkeeper: asyncpg pools from {MODE}"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if MODE != "poolkeeper":
        return
    for name, count in sorted(_counts.items()):
        terminalreporter.write_line(f"poolkeeper: {count} pools on {name}")
