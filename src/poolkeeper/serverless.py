"""Short import path for the serverless helper: ``poolkeeper.serverless``.

The code lives in :mod:`poolkeeper.integrations.serverless`; this module only
re-exports it.
"""

from __future__ import annotations

from poolkeeper.integrations.serverless import (
    DEFAULT_VALIDATE_AFTER,
    ServerlessPool,
    ServerlessStats,
)

__all__ = ["DEFAULT_VALIDATE_AFTER", "ServerlessPool", "ServerlessStats"]
