"""Retirement and reconnect policy: lifetimes with jitter, backoff with bounded jitter."""

from __future__ import annotations

import math
import re
from collections.abc import Callable

#: SQLSTATEs of connect errors that retrying will not fix: invalid
#: authorization (28000), wrong password (28P01), unknown database (3D000).
_FATAL_SQLSTATES = frozenset({"28000", "28P01", "3D000"})
#: MySQL/MariaDB error codes for the same: access denied (1044, 1045, 1698),
#: unknown database (1049).
_FATAL_MYSQL_CODES = frozenset({1044, 1045, 1049, 1698})
# libpq reports connect errors without a SQLSTATE (psycopg's sqlstate is None),
# so the server's message is the only clue there.
_FATAL_MESSAGES = re.compile(
    r'password authentication failed|role "[^"]*" does not exist|'
    r'database "[^"]*" does not exist|no pg_hba\.conf entry|'
    r"Access denied for user|Unknown database"
)


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


#: Backoff delays are shortened by up to this fraction at random.
BACKOFF_JITTER = 0.2


def backoff_delay(
    failures: int, base: float, cap: float, rand: Callable[[], float]
) -> float:
    """Return the wait before connect attempt number ``failures + 1``.

    Exponential growth from ``base`` capped at ``cap``, shortened by up to
    :data:`BACKOFF_JITTER` at random and never below ``base``: uniform in
    ``[0.8 * c, c]`` with ``c = min(cap, base * 2**(failures-1))``. The jitter
    keeps many clients from reconnecting in lockstep; keeping it to 20% (not
    "full jitter", uniform in ``[base, c]``) bounds the retry rate during a
    long outage: once capped, attempts are at least ``0.8 * cap`` apart,
    never back at ``base`` (S5 in RELIABILITY_PLAN.md: full jitter made about
    11 attempts in 5 s with a 1.5 s cap, up to 15, and gaps of 0.05 s).
    """
    if failures <= 0:
        return 0.0
    ceiling = min(cap, base * (2.0 ** min(failures - 1, 62)))
    return max(base, ceiling * (1.0 - BACKOFF_JITTER + BACKOFF_JITTER * rand()))


def is_fatal_connect_error(error: BaseException) -> bool:
    """Tell whether a connect error is one that retrying will not fix.

    Authentication failures and unknown databases fail waiting callers at
    once instead of letting them wait out their timeout; the pool keeps
    retrying in the background (with backoff) in case the fault is repaired.
    """
    sqlstate = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
    if sqlstate in _FATAL_SQLSTATES:
        return True
    args = getattr(error, "args", ())
    if args and isinstance(args[0], int) and args[0] in _FATAL_MYSQL_CODES:
        return True
    return bool(_FATAL_MESSAGES.search(str(error)))
