"""Helpers for the TLS and credential matrices (PostgreSQL and MySQL drivers).

One checkout through a fresh pool, sync or asyncio, returning what the caller
saw and after how long (:func:`checkout`); the text of an error chain; and
:func:`record`, which appends one JSON line per outcome to the file named by
``POOLKEEPER_TLS_REPORT`` (the table in docs/SECURITY.md comes from it).
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import re
import time
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import poolkeeper
from tests.support.tls import Certs, make_certs, openssl_available

#: Pool timeout of the checkouts: a refusal must come well before it.
TIMEOUT = 2.0
#: Connect errors retrying cannot fix reach the caller at once (issue 19,
#: item 2): a TLS refusal must arrive in under 1 s, as the driver's error.
REFUSAL_AT_ONCE = True


@dataclass
class Outcome:
    """What a caller saw from one checkout, and when."""

    row: tuple[Any, ...] | None
    error: BaseException | None
    elapsed: float
    pool_repr: str
    leaks: list[str] = field(default_factory=list)
    """ResourceWarnings collected after the pool closed (driver leaks)."""


def checkout(
    url: str,
    *,
    is_async: bool,
    fetch: Callable[[Any], tuple[Any, ...]] | None = None,
    afetch: Callable[[Any], Awaitable[tuple[Any, ...]]] | None = None,
    **pool_args: Any,
) -> Outcome:
    """Open a pool, take one connection, run ``fetch``/``afetch`` on it, close.

    The pool is closed as soon as the checkout is over, with any connect
    still in flight (background retries): a driver must close what that
    leaves half-made. Whatever the garbage collector then finds unclosed
    (a ``ResourceWarning``) is in ``Outcome.leaks``, which the assertions
    below require to be empty.
    """
    pool_args = {
        "min_size": 0,
        "max_size": 2,
        "timeout": TIMEOUT,
        "reconnect_max": 0.25,
        **pool_args,
    }
    if is_async:
        assert afetch is not None
        outcome = asyncio.run(_acheckout(url, afetch, pool_args))
        outcome.leaks = collect_leaks()
        return outcome
    assert fetch is not None
    with poolkeeper.Pool(url, **pool_args) as pool:
        started = time.monotonic()
        try:
            with pool.connection() as conn:
                row = fetch(conn)
        except Exception as exc:
            return Outcome(None, exc, time.monotonic() - started, repr(pool))
        return Outcome(row, None, time.monotonic() - started, repr(pool))


def collect_leaks() -> list[str]:
    """Collect garbage; return the ``ResourceWarning`` messages it caused."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", ResourceWarning)
        gc.collect()
    return [str(w.message) for w in seen if issubclass(w.category, ResourceWarning)]


async def _acheckout(
    url: str, afetch: Callable[[Any], Awaitable[tuple[Any, ...]]], pool_args: Any
) -> Outcome:
    async with poolkeeper.AsyncPool(url, **pool_args) as pool:
        started = time.monotonic()
        try:
            async with pool.connection() as conn:
                row = await afetch(conn)
        except Exception as exc:
            return Outcome(None, exc, time.monotonic() - started, repr(pool))
        return Outcome(row, None, time.monotonic() - started, repr(pool))


def chain_text(exc: BaseException | None) -> str:
    """Type and message of ``exc`` and every exception it was raised from."""
    parts: list[str] = []
    seen = exc
    while seen is not None and len(parts) < 10:
        parts.append(f"{type(seen).__name__}: {seen}")
        seen = seen.__cause__ or seen.__context__
    return "\n".join(parts)


def record(driver: str, case: str, outcome: Outcome) -> None:
    """Append the outcome to ``$POOLKEEPER_TLS_REPORT`` (JSON lines), if set."""
    path = os.environ.get("POOLKEEPER_TLS_REPORT")
    if not path:
        return
    if outcome.error is None:
        saw = f"connected, tls={outcome.row[0] if outcome.row else None}"
    else:
        root = outcome.error
        while root.__cause__ is not None:
            root = root.__cause__
        saw = f"{type(outcome.error).__name__} <- {type(root).__name__}: " + " ".join(
            str(root).split()
        )
    line = {
        "driver": driver,
        "case": case,
        "saw": saw,
        "s": round(outcome.elapsed, 3),
        "leaks": outcome.leaks,
    }
    with Path(path).open("a") as report:
        report.write(json.dumps(line) + "\n")


def assert_refused(
    driver: str, case: str, outcome: Outcome, pattern: str, secrets: tuple[str, ...]
) -> None:
    """The checkout failed with an error matching ``pattern``, leaking nothing."""
    record(driver, case, outcome)
    assert outcome.error is not None, f"{case}: connected ({outcome.row})"
    assert outcome.leaks == [], outcome.leaks
    text = chain_text(outcome.error)
    assert re.search(pattern, text), text
    for secret in secrets:
        assert secret not in text
        assert secret not in outcome.pool_repr
    if REFUSAL_AT_ONCE:
        assert outcome.elapsed < 1.0, outcome.elapsed
    else:
        assert outcome.elapsed < TIMEOUT + 1.0, outcome.elapsed


def assert_connected(driver: str, case: str, outcome: Outcome) -> tuple[Any, ...]:
    """The checkout worked; return the row it read."""
    record(driver, case, outcome)
    assert outcome.error is None, chain_text(outcome.error)
    assert outcome.row is not None
    assert outcome.leaks == [], outcome.leaks
    return outcome.row


@dataclass(frozen=True)
class Driver:
    """One driver under test: its URL name, import name and pool kind."""

    name: str
    package: str
    is_async: bool


def driver_param(request: Any) -> Driver:
    """The :class:`Driver` of a parametrized fixture, its package imported (or skipped)."""
    from tests.conftest import import_driver

    case: Driver = request.param
    import_driver(request.config, case.package)
    return case


def certs_or_skip(tmp_path_factory: Any, name: str) -> Certs:
    """Make test certificates in a fresh directory, or skip without openssl."""
    import pytest

    reason = openssl_available()
    if reason is not None:
        pytest.skip(reason)
    return make_certs(tmp_path_factory.mktemp(name))


class RotatingSecret:
    """A password provider whose answers a test controls, and the server's password.

    ``rotate(new)`` changes the password on the server and makes the provider
    answer ``new``; with ``stale=True`` the provider first answers the old
    value once more (a cache that has not noticed), then ``new``.
    """

    def __init__(self, first: str, set_on_server: Callable[[str], None]) -> None:
        self.answers = [first]
        self.calls: list[str] = []
        self._set_on_server = set_on_server

    def __call__(self) -> str:
        value = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        self.calls.append(value)
        return value

    def rotate(self, new: str, *, stale: bool = False) -> None:
        self._set_on_server(new)
        self.answers = [self.answers[-1], new] if stale else [new]

    def provider(self, *, is_async: bool) -> Callable[[], Any]:
        """The provider to put in ``connect_args``: a coroutine function for AsyncPool."""
        if not is_async:
            return self

        async def provide() -> str:
            await asyncio.sleep(0)
            return self()

        return provide


def rotation(
    url: str,
    secret: RotatingSecret,
    new: tuple[str, str],
    *,
    is_async: bool,
    fetch: Callable[[Any], tuple[Any, ...]],
    afetch: Callable[[Any], Awaitable[tuple[Any, ...]]],
    expected: tuple[Any, ...],
) -> str:
    """Connect, rotate, connect, rotate with a stale provider answer, connect.

    After each rotation the first connection must still work. Returns the
    pool's ``repr`` and stats text, for leak checks.
    """
    args: dict[str, Any] = {
        "connect_args": {"password": secret.provider(is_async=is_async)},
        "min_size": 0,
        "max_size": 3,
        "timeout": 5.0,
    }
    if is_async:
        return asyncio.run(_arotation(url, args, secret, new, afetch, expected))
    with poolkeeper.Pool(url, **args) as pool:
        first = pool.acquire()
        assert fetch(first) == expected
        held = [first]
        for value, stale in ((new[0], False), (new[1], True)):
            secret.rotate(value, stale=stale)
            held.append(pool.acquire())
            assert fetch(held[-1]) == expected
            assert fetch(first) == expected
        for conn in held:
            pool.release(conn)
        return f"{pool!r} {pool.stats()!r}"


async def _arotation(
    url: str,
    args: dict[str, Any],
    secret: RotatingSecret,
    new: tuple[str, str],
    afetch: Callable[[Any], Awaitable[tuple[Any, ...]]],
    expected: tuple[Any, ...],
) -> str:
    async with poolkeeper.AsyncPool(url, **args) as pool:
        first = await pool.acquire()
        assert await afetch(first) == expected
        held = [first]
        for value, stale in ((new[0], False), (new[1], True)):
            secret.rotate(value, stale=stale)
            held.append(await pool.acquire())
            assert await afetch(held[-1]) == expected
            assert await afetch(first) == expected
        for conn in held:
            await pool.release(conn)
        return f"{pool!r} {pool.stats()!r}"
