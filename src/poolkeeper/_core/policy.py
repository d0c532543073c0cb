"""Retirement and reconnect policy: lifetimes with jitter, backoff with bounded jitter."""

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


#: A failed connect that took less than this many seconds failed fast: the
#: host answered (a reset, "starting up") rather than letting a connect
#: timeout run out (libpq's shortest is 2 s). A refusal is always fast.
FAST_FAILURE = 0.5


def retry_delay(
    *,
    failures: int,
    slow_failures: int,
    fast: bool,
    waiting: bool,
    base: float,
    cap: float,
    fast_interval: float | None,
    rand: Callable[[], float],
) -> float:
    """Return the wait before the next connect attempt.

    Args:
        failures: Failed attempts in a row.
        slow_failures: How many of them failed slowly (a connect timeout).
        fast: Whether the last attempt failed fast (see :data:`FAST_FAILURE`).
        waiting: Whether callers wait for a connection.
        base, cap: ``reconnect_min`` and ``reconnect_max``.
        fast_interval: ``reconnect_fast_interval`` (None: always back off).
        rand: Uniform in [0, 1), for the jitter.

    Rules: with nobody waiting (or no fast interval), the exponential
    backoff over every failure (:func:`backoff_delay`). With callers waiting,
    a fast failure is retried after ``fast_interval`` (or the backoff if that
    is shorter): the server answered, it is only not ready yet, and each
    attempt costs it little. A slow failure backs off over the slow failures
    only, so one attempt slowed by a loaded machine amid fast ones costs a
    short step, not the ``cap`` the fast ones grew the count to.
    """
    if fast_interval is None or not waiting:
        return backoff_delay(failures, base, cap, rand)
    if fast:
        return min(fast_interval, backoff_delay(failures, base, cap, rand))
    return backoff_delay(slow_failures, base, cap, rand)


def query_stalled_for(
    *,
    busy: bool | None,
    quiet: float | None,
    busy_since: float | None,
    held: float,
    now: float,
) -> float:
    """Return how long a checked-out connection's command has been stuck (0: not).

    This is what ``query_timeout`` is compared with. The inputs come from the
    driver adapter (see :mod:`poolkeeper.drivers.base`), read without I/O:

    Args:
        busy: True while a command is in progress, False when none is, None
            when the driver cannot tell.
        quiet: Seconds since data last moved on the socket (None: unknown).
            A command sends data when it starts, so ``quiet`` never exceeds
            the age of the command in progress; a frozen server sends nothing.
        busy_since: When the watchdog first saw the current command in
            progress (by sampling ``busy``), or None.
        held: Seconds since the connection was checked out.
        now: The current monotonic instant.

    Rules:
        - not busy: 0, whatever else is known;
        - busy and the quiet time known: the quiet time (the command waited
          that long without a byte from the server);
        - busy, quiet time unknown (a Unix-domain socket, not Linux): the time
          since the command was first seen in progress;
        - busy unknown: the time since checkout, or the quiet time if that is
          shorter (a connection in active use is not stuck).
    """
    if busy is False:
        return 0.0
    if busy:
        if quiet is not None:
            return quiet
        return now - busy_since if busy_since is not None else 0.0
    return held if quiet is None else min(held, quiet)
