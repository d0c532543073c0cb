"""Polling helpers shared by the integration tests."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable


def settle(check: Callable[[], bool], within: float = 3.0, step: float = 0.02) -> bool:
    """Poll ``check`` until it holds or ``within`` seconds pass; return its last answer."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(step)
    return check()


async def asettle(check: Callable[[], bool], within: float = 1.0) -> bool:
    """:func:`settle` for a coroutine: sleeps with ``asyncio.sleep``."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(0.01)
    return check()


def unique_app(prefix: str = "pk-fault") -> str:
    """An ``application_name`` no other test uses, to find a pool's sessions."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"
