"""What :class:`Cluster` and :class:`AsyncCluster` share: arguments, member table, routing."""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Sequence
from typing import Any

from poolkeeper._config import DEFAULT_TIMEOUT, check_seconds
from poolkeeper._core.events import PoolEvent
from poolkeeper.cluster._events import ClusterEvents, ClusterListener
from poolkeeper.cluster._probe import (
    member_url,
    members_of,
    observation,
    patroni_hostports,
    patroni_leader,
    unreachable,
)
from poolkeeper.cluster._routing import ClusterStats, Observation, Router
from poolkeeper.drivers._hosts import HostPort
from poolkeeper.errors import ConfigError, PoolError

#: Seconds a probe (or a Patroni request) may take before the member counts as down.
DEFAULT_PROBE_TIMEOUT = 2.0
DEFAULT_REFRESH_INTERVAL = 1.0

_cluster_numbers = itertools.count(1)

#: A refresh's raw findings: per member, the probe row or the error, plus its name.
Finding = tuple[HostPort, "Sequence[Any] | BaseException", "str | None"]


class _ConnectWatch:
    """When a member pool's last connect failed (its ``connect*`` events)."""

    __slots__ = ("error", "failed_at")

    def __init__(self) -> None:
        self.error: BaseException | None = None
        self.failed_at = -math.inf

    def connected(self, event: PoolEvent) -> None:
        self.error = None

    def failed(self, event: PoolEvent) -> None:
        self.error = event.error or ConnectionError("connect failed")
        self.failed_at = time.monotonic()


class ClusterBase:
    """Arguments, the member table and routing, with no I/O (see ``_routing``)."""

    def __init__(
        self,
        url: str,
        *,
        patroni: str | Sequence[str] | None = None,
        max_lag: float | None = None,
        fallback_to_primary: bool = True,
        refresh_interval: float = DEFAULT_REFRESH_INTERVAL,
        probe_timeout: float = DEFAULT_PROBE_TIMEOUT,
        name: str | None = None,
        **pool_options: Any,
    ) -> None:
        self._seed = members_of(url)
        self._url = url
        if isinstance(patroni, str):
            patroni = [patroni]
        if patroni is not None and (
            not patroni or not all(isinstance(p, str) and "://" in p for p in patroni)
        ):
            raise ConfigError(
                "patroni must be a REST API URL such as 'http://127.0.0.1:8008' or a "
                f"list of them, got {patroni!r}"
            )
        self._patroni = list(patroni) if patroni is not None else None
        if not self._seed and self._patroni is None:
            raise ConfigError(
                "a cluster URL must name at least one host (or give patroni=)"
            )
        check_seconds("max_lag", max_lag, optional=True, allow_zero=True)
        check_seconds("refresh_interval", refresh_interval)
        check_seconds("probe_timeout", probe_timeout)
        if not isinstance(fallback_to_primary, bool):
            raise ConfigError(
                f"fallback_to_primary must be True or False, got {fallback_to_primary!r}"
            )
        for key in ("connect", "name"):
            if key in pool_options:
                raise ConfigError(f"{key} is set by the cluster for each member pool")
        self.name = name or f"cluster-{next(_cluster_numbers)}"
        self.refresh_interval = float(refresh_interval)
        self.probe_timeout = float(probe_timeout)
        self._pool_options = pool_options
        self._router = Router(max_lag, fallback_to_primary)
        self._lock = threading.Lock()
        self._events = ClusterEvents()
        self._watches: dict[int, _ConnectWatch] = {}

    def on(self, kind: str, listener: ClusterListener) -> None:
        """Call ``listener`` with a :class:`ClusterEvent` for each ``kind`` event.

        Kinds (``poolkeeper.cluster.CLUSTER_EVENT_KINDS``): ``primary_change``,
        ``member_added``, ``member_removed``, ``member_down``, ``member_up``,
        ``read_fallback``. Listeners run after the cluster's lock is released,
        in the refresh (or, for ``read_fallback``, the caller's) thread or task.

        Raises:
            ConfigError: ``kind`` is not a cluster event kind.
        """
        self._events.on(kind, listener)

    def off(self, kind: str, listener: ClusterListener) -> None:
        """Stop calling ``listener`` for ``kind`` events.

        Raises:
            ConfigError: ``kind`` is not a cluster event kind.
        """
        self._events.off(kind, listener)

    def _new_members(self, hostports: Sequence[HostPort]) -> list[tuple[HostPort, str]]:
        """Return ``(member, its URL)`` for members that have no pool yet."""
        with self._lock:
            missing = self._router.missing(hostports)
        return [(hp, member_url(self._url, *hp)) for hp in missing]

    def _pool_kwargs(self, hostport: HostPort) -> dict[str, Any]:
        host, port = hostport
        return {**self._pool_options, "name": f"{self.name}:{host}:{port}"}

    def _add(self, hostport: HostPort, pool: Any) -> bool:
        """Record a new member's pool; False if a concurrent refresh already did.

        The caller then closes ``pool`` (never opened, so closing is cheap).
        """
        with self._lock:
            added = bool(self._router.missing([hostport]))
            if added:
                self._router.add(hostport, pool)
                watch = _ConnectWatch()
                self._watches[id(pool)] = watch
                pool.on("connect", watch.connected)
                pool.on("connect_error", watch.failed)
            changes = self._router.take_changes()
        self._events.emit(self.name, changes)
        return added

    def _pools(self) -> list[tuple[HostPort, Any]]:
        with self._lock:
            return [((m.host, m.port), m.pool) for m in self._router.members.values()]

    def _lead(self, patroni: Sequence[dict[str, Any]] | None) -> HostPort | None:
        """Send writes to the leader Patroni's view names, now; return that leader."""
        if patroni is None:
            return None
        leader = patroni_leader(patroni)
        with self._lock:
            self._router.lead(leader)
            changes = self._router.take_changes()
        self._events.emit(self.name, changes)
        return leader

    def _probes_took_long(self, started: float) -> bool:
        """Whether Patroni's view may be stale after probes that began at ``started``."""
        return self._patroni is not None and (
            time.monotonic() - started > min(self.refresh_interval, 0.5)
        )

    def _down(self, pool: Any) -> BaseException | None:
        """The error that makes a member pool unreachable now, without waiting.

        A pool with no idle connection whose last connect failed less than
        ``probe_timeout`` ago is down: its probe would only wait on it.
        """
        watch = self._watches.get(id(pool))
        if watch is None or watch.error is None:
            return None
        if time.monotonic() - watch.failed_at >= self.probe_timeout:
            return None
        if pool.stats().idle:
            return None
        return watch.error

    def _apply(
        self,
        findings: Sequence[Finding],
        patroni: Sequence[dict[str, Any]] | None,
        leader: HostPort | None,
    ) -> list[Any]:
        """Turn probe results (and Patroni's view) into observations; return pools to close.

        ``leader``: the leader the latest Patroni view names (it may be newer
        than ``patroni``, the view the members probed came from).
        """
        observations: list[Observation] = []
        for hostport, result, name in findings:
            if isinstance(result, BaseException):
                observations.append(unreachable(hostport, name))
                continue
            obs = observation(hostport, result, name)
            if patroni is not None and obs.role == "primary" and hostport != leader:
                # Patroni has moved (or is moving) the leader elsewhere: what is
                # left here is a stale primary, whatever it still answers.
                obs = Observation(obs.host, obs.port, "read-only", obs.lag, True, name)
            observations.append(obs)
        with self._lock:
            gone = self._router.observe(observations, complete=patroni is not None)
            changes = self._router.take_changes()
            for pool in gone:
                self._watches.pop(id(pool), None)
        self._events.emit(self.name, changes)
        return gone

    def _members_to_probe(
        self, patroni: Sequence[dict[str, Any]] | None
    ) -> list[tuple[HostPort, str | None]]:
        if patroni is None:
            return [(hp, None) for hp in self._seed]
        return patroni_hostports(patroni)

    def _pick(self, readonly: bool, deadline: float) -> Any:
        """The pool for a checkout; None: wait and look again (a failover is under way).

        Raises:
            PoolError: no member can serve it, and waiting will not help
                (or ``deadline`` has passed).
        """
        with self._lock:
            pool = self._router.pick(readonly)
            if pool is None:
                router = self._router
                if (
                    not readonly
                    and router.writable_soon()
                    and time.monotonic() < deadline
                ):
                    return None
                if readonly and not router.fallback_to_primary:
                    what = f"replica within max_lag={router.max_lag} to read from"
                else:
                    what = "primary"
                raise PoolError(
                    f"cluster {self.name!r} has no {what} (members: {router.describe()})"
                )
            return pool

    def _deadline(self, timeout: float | None) -> float:
        wait = (
            self._pool_options.get("timeout", DEFAULT_TIMEOUT)
            if timeout is None
            else timeout
        )
        check_seconds("timeout", wait, allow_zero=True)
        return time.monotonic() + float(wait)

    def _slice(self, deadline: float) -> float:
        """How long to wait on one member pool before looking at the routing again.

        A caller queued on a primary that has gone away moves to the new one
        within a refresh interval of the refresh that sees it.
        """
        return max(0.0, min(deadline - time.monotonic(), self.refresh_interval))

    def _checked_out(self, pool: Any, readonly: bool) -> None:
        with self._lock:
            self._router.checked_out(pool, readonly)
            changes = self._router.take_changes() if readonly else None
        if changes:
            self._events.emit(self.name, changes)

    def _checked_in(self, pool: Any) -> None:
        with self._lock:
            self._router.checked_in(pool)

    def stats(self) -> ClusterStats:
        """Return a snapshot: each member's role, lag, checkouts and pool stats."""
        with self._lock:
            return self._router.stats(_pool_stats)

    @property
    def primary(self) -> HostPort | None:
        """The ``(host, port)`` writes go to now (None: no primary seen)."""
        with self._lock:
            return self._router.primary


def _pool_stats(pool: Any) -> Any:
    return pool.stats()
