"""Deprecated alias of :mod:`poolkeeper.serverless` (the serverless helper's home)."""

from __future__ import annotations

from poolkeeper.serverless import (
    DEFAULT_VALIDATE_AFTER,
    ServerlessPool,
    ServerlessStats,
)

__all__ = ["DEFAULT_VALIDATE_AFTER", "ServerlessPool", "ServerlessStats"]
