"""The record a pool keeps for each connection it owns."""

from __future__ import annotations

import sys
import traceback
from typing import Any

from poolkeeper._hoststate import HostState
from poolkeeper._sites import outside_frame


class PoolEntry:
    """One pooled connection and its bookkeeping.

    The user receives ``conn`` itself, never this record; the pool finds the
    record again from the connection's identity when it comes back.
    """

    __slots__ = (
        "aborted",
        "busy_since",
        "checked_at",
        "checked_out_at",
        "close_reason",
        "conn",
        "created_at",
        "expires_at",
        "host",
        "key",
        "last_used_at",
        "leak_reported",
        "lent_at",
        "ref",
        "site",
        "stack",
        "unconfirmed",
        "uses",
    )

    def __init__(self, conn: Any, created_at: float, expires_at: float) -> None:
        self.conn = conn
        self.key = id(conn)
        """The connection's key in ``PoolState.in_use``."""
        self.created_at = created_at
        self.expires_at = expires_at
        """Monotonic instant after which the connection retires (inf: never)."""
        self.last_used_at = created_at
        self.checked_out_at = created_at
        self.checked_at = created_at
        """Last instant the connection was known good (created or validated)."""
        self.uses = 0
        self.host: HostState | None = None
        """The server it reached (None: not tracked; see ``_hoststate``)."""
        self.close_reason: str | None = None
        self.stack: str | None = None
        """Where the current holder acquired it (only with leak detection on)."""
        self.leak_reported = False
        self.aborted = False
        """The query watchdog aborted this checkout (``query_timeout``)."""
        self.busy_since: float | None = None
        """When the watchdog first saw the current command in progress."""
        self.lent_at = created_at
        """When the pool lent it to itself for a ping (``checked_out_at`` is inf then)."""
        self.unconfirmed = False
        """Lent to a caller but due a validation first: its checkout is not
        reported in ``acquires`` until the validation passes."""
        self.site: tuple[Any, int] | None = None
        """Where the caller holding it called ``acquire()`` (code object,
        instruction offset: see ``poolkeeper._sites``); None when it is idle
        or held by a ``connection()`` block."""
        self.ref: Any = None
        """A weak reference to ``conn`` (made on its first ``acquire()``); while
        an ``acquire()`` caller holds the connection, ``conn`` is None and this
        is the pool's only reference, so a connection the caller drops is
        garbage collected and its slot taken back."""

    def live_conn(self) -> Any:
        """The connection, also while it is held weakly (None: it was dropped)."""
        conn = self.conn
        if conn is None and self.ref is not None:
            conn = self.ref()
        return conn

    def __repr__(self) -> str:
        return (
            f"<PoolEntry {type(self.conn).__name__} uses={self.uses} "
            f"created_at={self.created_at:.3f}>"
        )


class Waiter:
    """A caller waiting for a connection, in FIFO order.

    The core fills in ``entry`` (served) or ``error`` (pool closed, a connect
    failed for good) before it hands the waiter back to the shell to wake;
    ``signal`` is the shell's wake-up primitive, opaque to the core.
    ``connect_only``: a ``timeout=0`` caller waiting only for the connect
    started for it (see ``PoolState.wait_for_connect``). ``queued``: the
    waiter is in the state's queue and still waiting; one that stops
    waiting in the middle of the queue stays there, no longer ``queued``,
    until the queue drops it (see ``StateBase.unqueue``).
    """

    __slots__ = (
        "connect_only",
        "enqueued_at",
        "entry",
        "error",
        "overtaken",
        "queued",
        "signal",
    )

    def __init__(self, signal: Any, enqueued_at: float) -> None:
        self.signal = signal
        self.enqueued_at = enqueued_at
        self.entry: PoolEntry | None = None
        self.error: BaseException | None = None
        self.connect_only = False
        self.queued = False
        self.overtaken = False


def capture_stack(limit: int = 16) -> str:
    """Format the stack of the code that is acquiring a connection.

    It starts at the nearest frame outside poolkeeper (the pool's own frames,
    which the compiled build does not have, are left out). Source lines are
    not read here: that happens only if a leak is reported. Used only with
    leak detection on.
    """
    frame = outside_frame(sys._getframe(0))
    summary = traceback.StackSummary.extract(
        traceback.walk_stack(frame), limit=limit, lookup_lines=False
    )
    summary.reverse()
    return "".join(summary.format())
