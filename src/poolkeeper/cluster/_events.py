"""Cluster events: the primary moved, a member came or went, a read fell back.

Listeners subscribe with ``cluster.on(kind, fn)``. The router records what
changed while it holds the cluster's lock; the shell calls the listeners after
releasing it, in the thread or task that made the change (the refresh for
membership and roles, the caller for ``read_fallback``). A listener that
raises is logged on ``poolkeeper.events`` and otherwise ignored, as for pool
events.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from poolkeeper.drivers._hosts import HostPort, Role
from poolkeeper.errors import ConfigError

logger = logging.getLogger("poolkeeper.events")

#: Every cluster event kind.
CLUSTER_EVENT_KINDS = (
    "primary_change",  # writes go to another member (previous: where they went)
    "member_added",  # a member pool was created (URL host list or Patroni)
    "member_removed",  # Patroni no longer lists a member; its pool is closed
    "member_down",  # a member failed its probe
    "member_up",  # a member answered its probe after being down (or new)
    "read_fallback",  # a readonly checkout was served by the primary
)


@dataclass(frozen=True)
class ClusterEvent:
    """One cluster event.

    Attributes:
        kind: One of :data:`CLUSTER_EVENT_KINDS`.
        cluster_name: The cluster's name.
        host: The member concerned (for ``primary_change``: the new primary).
        port: Its port.
        role: Its role as last observed (``unknown`` while unreachable).
        previous: For ``primary_change``, where writes went before (None when
            this is the first primary seen).
    """

    kind: str
    cluster_name: str
    host: str | None
    port: int | None
    role: Role
    previous: HostPort | None = None


ClusterListener = Callable[[ClusterEvent], object]

#: What the router records under the lock: kind, member, role, previous primary.
Change = tuple[str, HostPort, Role, "HostPort | None"]


class ClusterEvents:
    """Listener lists per cluster event kind."""

    __slots__ = ("_listeners",)

    def __init__(self) -> None:
        self._listeners: dict[str, list[ClusterListener]] = {
            kind: [] for kind in CLUSTER_EVENT_KINDS
        }

    def _list(self, kind: str) -> list[ClusterListener]:
        try:
            return self._listeners[kind]
        except KeyError:
            raise ConfigError(
                f"unknown cluster event {kind!r}; events are: "
                f"{', '.join(CLUSTER_EVENT_KINDS)}"
            ) from None

    def on(self, kind: str, listener: ClusterListener) -> None:
        """Call ``listener`` with each ``kind`` event.

        Raises:
            ConfigError: ``kind`` is not a cluster event kind.
        """
        self._list(kind).append(listener)

    def off(self, kind: str, listener: ClusterListener) -> None:
        """Stop calling ``listener`` for ``kind`` (no error if it was not subscribed).

        Raises:
            ConfigError: ``kind`` is not a cluster event kind.
        """
        listeners = self._list(kind)
        if listener in listeners:
            listeners.remove(listener)

    def wanted(self, kind: str) -> bool:
        """Whether anyone listens to ``kind`` (so callers skip building events)."""
        return bool(self._listeners[kind])

    def emit(self, cluster_name: str, changes: Iterable[Change]) -> None:
        """Call the listeners of each change; log and swallow what one raises."""
        for kind, (host, port), role, previous in changes:
            listeners = self._listeners[kind]
            if not listeners:
                continue
            event = ClusterEvent(kind, cluster_name, host, port, role, previous)
            for listener in tuple(listeners):
                try:
                    listener(event)
                except Exception:
                    logger.exception(
                        "cluster %r: listener %r for %r events failed",
                        cluster_name,
                        listener,
                        kind,
                    )
