"""Shared pieces of the command line: exit codes, errors, URLs and output.

Nothing here imports rich or matplotlib at module level: the CLI must start
(and ``--help`` must work) without the ``cli`` extra, and importing
:mod:`poolkeeper` must never pull them in.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from poolkeeper._config import URL, parse_url, redact
from poolkeeper.cli._fixes import connect_fix, root_cause
from poolkeeper.errors import ConfigError

EXIT_OK = 0
"""Everything went fine."""
EXIT_FAILED = 1
"""A check failed, or the benchmark hit an error (for example a bad query)."""
EXIT_USAGE = 2
"""Bad command line: unknown option, bad URL, missing driver or extra."""
EXIT_CONNECT = 3
"""The database could not be reached or refused the connection."""

#: Seconds a TCP probe waits before declaring a server unreachable.
PROBE_TIMEOUT = 5.0


class CliError(Exception):
    """An error the CLI reports as one line, then exits with :attr:`code`."""

    def __init__(
        self, message: str, code: int = EXIT_FAILED, *, fix: str | None = None
    ) -> None:
        super().__init__(message if fix is None else f"{message}; fix: {fix}")
        self.code = code
        #: What the user should do, when known (also at the end of the message).
        self.fix = fix
        #: The message without the fix line.
        self.problem = message


def first_line(exc: BaseException) -> str:
    """Return the first non-empty line of an exception's message, with its type.

    Driver errors are often several lines long (libpq adds context lines); the
    CLI shows only the first one unless ``--debug`` is given.
    """
    text = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


@dataclass(frozen=True)
class Target:
    """A database URL checked for use by ``bench`` and ``tune``.

    Attributes:
        url: The URL as given (it may contain a password: never print it).
        display: The URL with any password replaced by ``***``.
        parsed: The parsed URL.
        driver_name: The driver adapter's name (``sqlite3``, ``psycopg``, ...).
        is_async: Whether the adapter is an asyncio one.
    """

    url: str
    display: str
    parsed: URL
    driver_name: str
    is_async: bool

    @property
    def is_postgres(self) -> bool:
        """Whether the URL names a PostgreSQL server."""
        return self.parsed.dialect in ("postgresql", "postgres")

    @property
    def is_sqlite(self) -> bool:
        """Whether the URL names an SQLite database."""
        return self.parsed.dialect == "sqlite"


def resolve_target(url: str, *, use_async: bool) -> Target:
    """Parse ``url`` and find the driver adapter a pool of that kind would use.

    Sync or asyncio follows the URL's driver: an async-only driver
    (``postgresql+asyncpg://``, ``mysql+aiomysql://``) selects asyncio even
    without ``--async``, since there is only one way to use it; ``--async``
    picks the asyncio side of a driver that has both (psycopg).

    Raises:
        CliError: With :data:`EXIT_USAGE` when the URL is malformed, its
            scheme is unknown, its driver's package is not installed (the
            message names the package to install), or ``--async`` was given
            for a sync-only driver.
    """
    from poolkeeper.drivers import driver_for_url, spec_for_url

    try:
        parsed = parse_url(url)
        scheme, spec = spec_for_url(url)
    except ConfigError as exc:
        raise CliError(f"bad URL: {exc}", EXIT_USAGE) from exc
    if spec.sync_class is None:
        use_async = True
    elif use_async and spec.async_class is None:
        raise CliError(
            f"the {scheme}:// driver is sync-only: drop --async, or use an asyncio "
            "driver (postgresql+asyncpg://, postgresql+psycopg://, mysql+aiomysql://, "
            "sqlite+aiosqlite://)",
            EXIT_USAGE,
        )
    if importlib.util.find_spec(spec.package) is None:
        raise CliError(
            f"the {scheme}:// driver needs the {spec.package!r} package, which is "
            f"not installed",
            EXIT_USAGE,
            fix=f"pip install '{spec.install}' (or 'poolkeeper[{spec.module}]')",
        )
    try:
        driver = driver_for_url(url, {}, is_async=use_async)
    except ConfigError as exc:
        raise CliError(f"bad URL: {exc}", EXIT_USAGE) from exc
    return Target(url, redact(url), parsed, driver.name, use_async)


def default_sqlite_url(directory: str, *, use_async: bool) -> str:
    """Create an empty SQLite database file in ``directory`` and return its URL.

    The file uses WAL journaling so that concurrent readers do not block each
    other, which is how an application would set it up.
    """
    import sqlite3

    path = os.path.join(directory, "poolkeeper-bench.db")
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT)"
        )
        conn.executemany(
            "INSERT OR IGNORE INTO items (id, name) VALUES (?, ?)",
            [(i, f"item {i}") for i in range(1, 101)],
        )
        conn.commit()
    finally:
        conn.close()
    scheme = "sqlite+aiosqlite" if use_async else "sqlite"
    return f"{scheme}:///{path}"


@contextlib.contextmanager
def database_url(url: str | None, *, use_async: bool) -> Iterator[str]:
    """Yield ``url``, or the URL of a throwaway SQLite database when it is None.

    The throwaway database lives in a temporary directory removed on exit.
    """
    if url is not None:
        yield url
        return
    with tempfile.TemporaryDirectory(prefix="poolkeeper-") as directory:
        yield default_sqlite_url(directory, use_async=use_async)


def probe_tcp(target: Target, timeout: float = PROBE_TIMEOUT) -> None:
    """Fail fast with :data:`EXIT_CONNECT` when a network server is unreachable.

    Drivers can hang for minutes on an unroutable address; one short TCP
    connect tells "nothing listens there" apart from slower problems. SQLite
    and Unix-socket URLs are not probed.

    Raises:
        CliError: DNS failed or the TCP connect was refused or timed out.
    """
    parsed = target.parsed
    if target.is_sqlite or parsed.host is None or parsed.host.startswith("/"):
        return
    port = parsed.port or default_port(parsed.dialect)
    where = f"{parsed.host}:{port}"
    try:
        with socket.create_connection((parsed.host, port), timeout=timeout):
            pass
    except socket.gaierror as exc:
        raise CliError(
            f"cannot resolve host {parsed.host!r} ({exc.strerror}); check the host "
            f"name in {target.display}",
            EXIT_CONNECT,
        ) from exc
    except TimeoutError as exc:
        raise CliError(
            f"cannot connect to {where}: no answer within {timeout:.0f} s (firewall, "
            "wrong host, or server down?)",
            EXIT_CONNECT,
        ) from exc
    except OSError as exc:
        raise CliError(
            f"cannot connect to {where}: {exc.strerror or exc}",
            EXIT_CONNECT,
            fix=connect_fix("connection refused"),
        ) from exc


def default_port(dialect: str) -> int:
    """Return the usual TCP port of a database dialect."""
    return {"mysql": 3306, "mariadb": 3306}.get(dialect, 5432)


def connect_failed(target: Target, exc: BaseException) -> CliError:
    """Build the error for a failed connect (exit :data:`EXIT_CONNECT`).

    It names the driver's own error, found under a :class:`~poolkeeper.PoolTimeout`
    chained to it, and on a second line the fix that error calls for, as
    ``poolkeeper check`` shows it.
    """
    cause = root_cause(exc)
    return CliError(
        f"cannot connect to {target.display}: {first_line(cause)}",
        EXIT_CONNECT,
        fix=connect_fix(str(cause)),
    )


def ms(seconds: float) -> str:
    """Format a duration in seconds as milliseconds, precision to match its size."""
    return f"{ms_number(seconds)} ms"


def ms_number(seconds: float) -> str:
    """Format a duration in seconds as a bare number of milliseconds (table cells)."""
    value = seconds * 1000.0
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def quantile(ordered: Sequence[float], q: float) -> float:
    """Return the ``q`` quantile (nearest rank) of an ascending sequence, or 0.0."""
    if not ordered:
        return 0.0
    index = min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))
    return ordered[index]


class Output:
    """Where the CLI writes: a rich console when available, plain text otherwise.

    Tables go to stdout; progress goes to stderr and only when stderr is a
    terminal (and ``--no-progress`` was not given).
    """

    def __init__(self, *, progress: bool, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.rich = _rich_available()
        self.progress_enabled = progress and self.rich and sys.stderr.isatty()

    def print(self, text: str = "") -> None:
        """Print a line of plain text."""
        print(text, file=self.stream)

    def table(
        self, title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]
    ) -> None:
        """Print a table; numeric-looking columns (all but the first) are right-aligned."""
        if self.rich:
            from rich import box
            from rich.console import Console
            from rich.table import Table

            tty = self.stream.isatty()
            console = Console(file=self.stream, width=None if tty else 120)
            console.print(title, highlight=False, soft_wrap=True)
            table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
            for i, column in enumerate(columns):
                table.add_column(
                    column, justify="left" if i == 0 else "right", no_wrap=i == 0
                )
            for row in rows:
                table.add_row(*row)
            console.print(table)
            return
        widths = [
            max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)
        ]
        self.print(title)
        self.print(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(columns, widths, strict=True))
            )
        )
        for row in rows:
            self.print(
                "  ".join(
                    v.ljust(w) if i == 0 else v.rjust(w)
                    for i, (v, w) in enumerate(zip(row, widths, strict=True))
                )
            )
        self.print()

    @contextlib.contextmanager
    def progress(self, description: str, total: float) -> Iterator[ProgressSink]:
        """Show a progress bar over ``total`` seconds (a no-op when disabled)."""
        if not self.progress_enabled:
            yield ProgressSink(None, None)
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        with progress:
            task = progress.add_task(description, total=total, rate="")
            yield ProgressSink(progress, task)


class ProgressSink:
    """Receives progress updates from a running workload."""

    def __init__(self, progress: Any, task: Any) -> None:
        self._progress = progress
        self._task = task

    def update(self, elapsed: float, ops: int) -> None:
        """Report ``ops`` operations done after ``elapsed`` seconds."""
        if self._progress is None:
            return
        rate = f"{ops / elapsed:,.0f} ops/s" if elapsed > 0 else ""
        self._progress.update(self._task, completed=elapsed, rate=rate)


def _rich_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("rich") is not None


def now() -> float:
    """Return the monotonic high-resolution clock used for all CLI timings."""
    return time.perf_counter()
