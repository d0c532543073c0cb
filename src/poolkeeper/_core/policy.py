"""Retirement and reconnect policy: lifetimes with jitter, backoff with full jitter."""

from __future__ import annotations

import math
from collections.abc import Callable


def expiry(
    created_at: float,
    max_lifetime: float | None,
    jitter: float,
    rand: Callable[[], float],
) -> float:
    """Return when a connection created at ``created_at`` should retire.

    The lifetime is shortened by a random fraction up to ``jitter`` so that
    connections opened together do not all expire in the same instant.
    """
    if max_lifetime is None:
        return math.inf
    return created_at + max_lifetime * (1.0 - jitter * rand())


def backoff_delay(
    failures: int, base: float, cap: float, rand: Callable[[], float]
) -> float:
    """Return the wait before connect attempt number ``failures + 1``.

    Exponential growth from ``base`` capped at ``cap``, with "full jitter"
    above the floor: uniform in ``[base, min(cap, base * 2**(failures-1))]``.
    Spreading the retries keeps many clients from reconnecting in lockstep.
    """
    if failures <= 0:
        return 0.0
    ceiling = min(cap, base * (2.0 ** min(failures - 1, 62)))
    return base + (ceiling - base) * rand()
