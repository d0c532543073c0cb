"""Deprecated aliases of the integrations' public homes.

Each integration now lives at its own public path, and this package only
re-exports it for code written against the older names:

- :mod:`poolkeeper.integrations.sqlalchemy` -> :mod:`poolkeeper.sqlalchemy`
- :mod:`poolkeeper.integrations.django` -> :mod:`poolkeeper.django`
  (``ENGINE: "poolkeeper.integrations.django.postgresql"`` keeps working)
- :mod:`poolkeeper.integrations.pgbouncer` -> :func:`poolkeeper.presets.pgbouncer_transaction`
- :mod:`poolkeeper.integrations.serverless` -> :mod:`poolkeeper.serverless`

Importing a submodule imports its framework; ``import poolkeeper`` does not.
"""

from __future__ import annotations

__all__: list[str] = []
