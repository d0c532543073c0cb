"""Pool events: what happened to which connection, for listeners and exporters.

Listeners subscribe with ``pool.on(kind, fn)``. The shells check a plain list
per kind before building an event, so a pool with no listener pays one
attribute test per potential event and nothing else. A listener that raises is
logged and otherwise ignored: observing the pool never breaks it.

With a listener, every checkout and checkin builds one :class:`PoolEvent` and
calls the listeners in the caller's thread or task, so both are kept cheap:
``PoolEvent`` is a plain slotted dataclass built positionally (a frozen one
costs several times more to build, one ``object.__setattr__`` per field), and
:func:`emit` skips the per-call validation that :meth:`EventBus.listeners`
does for ``on()``/``off()``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from poolkeeper.errors import ConfigError

logger = logging.getLogger("poolkeeper.events")

#: Every event kind, in lifecycle order.
EVENT_KINDS = (
    "connect",  # a new connection opened (duration: connect time)
    "connect_error",  # a connect attempt failed (error)
    "checkout",  # a caller got a connection (duration: time waited)
    "checkin",  # a caller gave one back (duration: time held)
    "discard",  # the pool closed a connection (reason)
    "timeout",  # a caller gave up waiting (duration: time waited)
    "leak",  # a connection was held longer than leak_timeout (duration, stack)
)


@dataclass(slots=True, eq=False)
class PoolEvent:
    """One pool event. Listeners must treat it as read-only: several share it.

    Each event is one occurrence: events compare equal only to themselves and
    are hashable (by identity), so listeners can keep them in sets or as keys.

    Attributes:
        kind: One of :data:`EVENT_KINDS`.
        pool_name: The pool's name.
        conn: The driver connection concerned, if any.
        duration: Seconds: connect time, wait time or hold time, per kind.
        reason: Why a connection was discarded (lifetime, idle, uses, broken,
            check, resize, close, error, query_timeout, cancelled).
        error: The exception of a failed connect.
        stack: Where a leaked connection was acquired (formatted), if known.
    """

    kind: str
    pool_name: str
    conn: Any = None
    duration: float = 0.0
    reason: str | None = None
    error: BaseException | None = None
    stack: str | None = None


Listener = Callable[[PoolEvent], object]


class EventBus:
    """Listener lists, one attribute per event kind, tested cheaply on hot paths."""

    __slots__ = EVENT_KINDS

    def __init__(self) -> None:
        self.connect: list[Listener] = []
        self.connect_error: list[Listener] = []
        self.checkout: list[Listener] = []
        self.checkin: list[Listener] = []
        self.discard: list[Listener] = []
        self.timeout: list[Listener] = []
        self.leak: list[Listener] = []

    def listeners(self, kind: str) -> list[Listener]:
        """Return the (mutable) listener list for ``kind``.

        Raises:
            ConfigError: ``kind`` is not an event kind.
        """
        if kind not in EVENT_KINDS:
            raise ConfigError(
                f"unknown pool event {kind!r}; events are: {', '.join(EVENT_KINDS)}"
            )
        result: list[Listener] = getattr(self, kind)
        return result

    def emit(self, listeners: list[Listener], event: PoolEvent) -> None:
        """Call each listener; log and swallow what a listener raises."""
        emit(listeners, event)


def emit(listeners: list[Listener], event: PoolEvent) -> None:
    """Call each of ``listeners`` with ``event``; log and swallow what one raises.

    Iterates over a copy, so a listener may subscribe or unsubscribe others.
    """
    for listener in tuple(listeners):
        try:
            listener(event)
        except Exception:
            logger.exception(
                "pool %r: listener %r for %r events failed",
                event.pool_name,
                listener,
                event.kind,
            )
