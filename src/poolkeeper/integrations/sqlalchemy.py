"""Deprecated alias of :mod:`poolkeeper.sqlalchemy` (the SQLAlchemy pool classes' home).

Importing it imports SQLAlchemy, as :mod:`poolkeeper.sqlalchemy` does.
"""

from __future__ import annotations

from poolkeeper.sqlalchemy import AsyncPool, Pool

__all__ = ["AsyncPool", "Pool"]
