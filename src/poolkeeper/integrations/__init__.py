"""Framework integrations: SQLAlchemy, Django, PgBouncer and serverless helpers.

Each submodule imports its framework only when it is itself imported, so
``import poolkeeper`` (and ``import poolkeeper.integrations``) stays free of
optional dependencies.

- :mod:`poolkeeper.integrations.sqlalchemy`: pool classes for
  ``create_engine(..., poolclass=...)`` and ``create_async_engine``.
- :mod:`poolkeeper.integrations.django`: a PostgreSQL database backend
  (``ENGINE: "poolkeeper.integrations.django.postgresql"``).
- :mod:`poolkeeper.integrations.pgbouncer`: driver settings for PgBouncer in
  transaction mode (also reachable as :func:`poolkeeper.presets.pgbouncer_transaction`).
- :mod:`poolkeeper.integrations.serverless`: a module-level pool that survives
  warm invocations of a function (AWS Lambda and similar).
"""

from __future__ import annotations

__all__: list[str] = []
