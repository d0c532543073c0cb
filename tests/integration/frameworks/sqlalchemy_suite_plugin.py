"""pytest plugin for SQLAlchemy's own test suite: every engine on poolkeeper's pool.

``tools/sqlalchemy_suite.py`` loads it with ``-p`` into a pytest run inside the
unpacked SQLAlchemy sdist. With ``POOLKEEPER_SQLA_POOL=poolkeeper`` (the
default) every engine whose pool class SQLAlchemy would pick by itself
(``QueuePool``, ``AsyncAdaptedQueuePool``) gets :class:`poolkeeper.sqlalchemy.Pool` or
:class:`poolkeeper.sqlalchemy.AsyncPool` instead. With ``stock`` nothing is
changed, for the comparison run. Engines given a pool class explicitly
(``poolclass=QueuePool``, ``NullPool``, ...) keep it: those tests are about
that class.

The class is printed in the report header, and the end of the run reports how
many engines were built on each class, so that a silent fallback to
SQLAlchemy's own pool is visible.
"""

from __future__ import annotations

import collections
import os
from typing import Any

import pytest

MODE = os.environ.get("POOLKEEPER_SQLA_POOL", "poolkeeper")
_counts: collections.Counter[str] = collections.Counter()


def _swap(poolclass: Any) -> Any:
    """Return poolkeeper's class in place of SQLAlchemy's queue pools."""
    from sqlalchemy import pool

    from poolkeeper import sqlalchemy as pk_sa

    if poolclass is not None and isinstance(poolclass, type):
        if issubclass(poolclass, pk_sa.AsyncPool | pk_sa.Pool):
            return poolclass
        if issubclass(poolclass, pool.AsyncAdaptedQueuePool):
            return pk_sa.AsyncPool
        if issubclass(poolclass, pool.QueuePool):
            return pk_sa.Pool
    return poolclass


def _install() -> None:
    from sqlalchemy.engine import default

    original = default.DefaultDialect.get_dialect_pool_class

    def get_dialect_pool_class(self: Any, url: Any) -> Any:
        return _swap(original(self, url))

    default.DefaultDialect.get_dialect_pool_class = get_dialect_pool_class  # type: ignore[method-assign]


def _queue_pool_requirement() -> None:
    """Let ``@testing.requires.queue_pool`` tests run on poolkeeper's pools too.

    The requirement is ``isinstance(config.db.pool, QueuePool)``: it marks the
    tests of a bounded, queueing pool (exhaustion timeouts, dispose), which
    is what poolkeeper's classes stand in for.
    """
    from sqlalchemy.pool import QueuePool
    from sqlalchemy.testing import exclusions
    from sqlalchemy.testing import requirements as sa_requirements

    from poolkeeper import sqlalchemy as pk_sa

    def queue_pool(self: Any) -> Any:
        def go(config: Any) -> bool:
            return isinstance(config.db.pool, QueuePool | pk_sa.Pool | pk_sa.AsyncPool)

        return exclusions.only_if(go)  # type: ignore[no-untyped-call]

    sa_requirements.SuiteRequirements.queue_pool = property(queue_pool)  # type: ignore[method-assign,assignment]


def _count_engines() -> None:
    # Counted in __new__: create_engine() reads Engine.__init__'s signature
    # to route its keyword arguments, so __init__ must stay as it is.
    from sqlalchemy.engine import base
    from sqlalchemy.pool import Pool as SAPool

    def __new__(cls: Any, pool: Any = None, *args: Any, **kw: Any) -> Any:
        if isinstance(pool, SAPool):  # not an OptionEngine over an engine
            _counts[type(pool).__qualname__] += 1
        return object.__new__(cls)

    base.Engine.__new__ = __new__  # type: ignore[method-assign]


def pytest_report_header(config: pytest.Config) -> str:
    """Say which pool class the engines get."""
    if MODE == "stock":
        return "poolkeeper: stock SQLAlchemy pools (comparison run)"
    return (
        "poolkeeper: engines on poolkeeper.sqlalchemy.Pool "
        "(AsyncPool for asyncio dialects)"
    )


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """Patch SQLAlchemy before its own plugin builds the test engines."""
    _count_engines()
    if MODE != "stock":
        _install()
        _queue_pool_requirement()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Report the pool classes the run's engines were built on."""
    built = ", ".join(f"{n} on {name}" for name, n in sorted(_counts.items()))
    terminalreporter.write_line(f"poolkeeper: engines: {built or 'none'}")
