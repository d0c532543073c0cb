"""Short import path for the SQLAlchemy pool classes: ``poolkeeper.sqlalchemy.Pool``.

The code lives in :mod:`poolkeeper.integrations.sqlalchemy`; this module only
re-exports it (importing it imports SQLAlchemy; ``import poolkeeper`` does not)::

    create_engine(url, poolclass=poolkeeper.sqlalchemy.Pool, pool_size=10)
"""

from __future__ import annotations

from poolkeeper.integrations.sqlalchemy import AsyncPool, Pool

__all__ = ["AsyncPool", "Pool"]
