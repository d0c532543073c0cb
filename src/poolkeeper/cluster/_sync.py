"""The cluster object for threads: :class:`Cluster`."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any

from poolkeeper.cluster._base import (
    ClusterBase,
    Finding,
)
from poolkeeper.cluster._probe import patroni_members, probe_sync
from poolkeeper.drivers._hosts import HostPort
from poolkeeper.errors import PoolTimeout

#: Seconds between looks at the routing while a write has no usable primary.
_RETRY_PICK = 0.02


class Cluster(ClusterBase):
    """A pool per PostgreSQL cluster member, with read/write routing (threads).

    ``connection()`` goes to the primary; ``connection(readonly=True)`` to a
    healthy replica whose replay lag is at most ``max_lag`` (the least busy,
    then round robin), or to the primary when none qualifies and
    ``fallback_to_primary`` is set. Members come from the URL's host list or,
    with ``patroni=``, from Patroni's ``GET /cluster``; a background thread
    refreshes roles and lag every ``refresh_interval`` seconds.

    Args:
        url: A ``postgresql+DRIVER://`` URL; its host list names the members
            (``target_session_attrs`` and ``load_balance_hosts`` are dropped
            from each member's own URL). With ``patroni=`` it only supplies the
            driver, credentials, database and parameters.
        patroni: Patroni REST API base URL(s), e.g. ``http://10.0.0.1:8008``.
        max_lag: Seconds of replay lag beyond which a replica gets no reads
            (None: no limit).
        fallback_to_primary: Serve reads from the primary when no replica
            qualifies (default True); else such a read raises ``PoolError``.
        refresh_interval: Seconds between background refreshes (default 1).
        probe_timeout: Seconds a member's probe may take (default 2).
        name: The cluster's name; member pools are named ``NAME:HOST:PORT``.
        **pool_options: Passed to each member's :class:`poolkeeper.Pool`.

    Raises:
        ConfigError: an argument is not valid (it is named).
    """

    _thread: threading.Thread | None = None
    _stop: threading.Event | None = None

    def open(self) -> None:
        """Discover the members and their roles, then keep refreshing in the background."""
        if self._thread is not None:
            return
        self.refresh()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"poolkeeper-{self.name}-refresh", daemon=True
        )
        self._thread.start()

    def refresh(self) -> None:
        """Re-read the membership, then probe every member's role and lag now."""
        from poolkeeper._sync.pool import Pool

        members = (
            patroni_members(self._patroni, self.probe_timeout)
            if self._patroni is not None
            else None
        )
        wanted = self._members_to_probe(members)
        for hostport, url in self._new_members([hp for hp, _ in wanted]):
            pool = Pool(url, **self._pool_kwargs(hostport))
            if not self._add(hostport, pool):
                pool.close()
        leader = self._lead(members)
        pools = dict(self._pools())
        started = time.monotonic()
        findings = self._probe_all([(hp, pools[hp], name) for hp, name in wanted])
        if self._probes_took_long(started):
            assert self._patroni is not None
            try:
                view = patroni_members(self._patroni, self.probe_timeout)
            except OSError:
                pass  # keep the leader of the view the probes started from
            else:
                leader = self._lead(view)
        for pool in self._apply(findings, members, leader):
            pool.close()

    def _probe_all(
        self, wanted: list[tuple[HostPort, Any, str | None]]
    ) -> list[Finding]:
        """Probe every member at once, each in its own thread, for ``probe_timeout``.

        A member whose pool is down (:meth:`_down`) is not waited on; one whose
        probe has not finished by then counts as unreachable (its thread ends
        on its own, within the pool's timeout).
        """
        results: dict[int, Finding] = {}
        threads: list[threading.Thread] = []
        for i, (hostport, pool, name) in enumerate(wanted):
            down = self._down(pool)
            if down is not None:
                results[i] = (hostport, down, name)
                continue
            thread = threading.Thread(
                target=self._probe,
                args=(results, i, pool, hostport, name),
                name=f"poolkeeper-{self.name}-probe",
                daemon=True,
            )
            thread.start()
            threads.append(thread)
        deadline = time.monotonic() + self.probe_timeout + 1.0
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        late = TimeoutError(f"probe took over {self.probe_timeout} s")
        return [
            results.get(i, (hostport, late, name))
            for i, (hostport, _, name) in enumerate(wanted)
        ]

    def _probe(
        self,
        results: dict[int, Finding],
        i: int,
        pool: Any,
        hostport: HostPort,
        name: str | None,
    ) -> None:
        try:
            with pool.connection(timeout=self.probe_timeout) as conn:
                results[i] = (hostport, probe_sync(conn), name)
        except Exception as exc:
            results[i] = (hostport, exc, name)

    def _run(self) -> None:
        assert self._stop is not None
        while not self._stop.wait(self.refresh_interval):
            try:
                self.refresh()
            except Exception:
                self._router.refresh_errors += (
                    1  # Patroni unreachable: keep the last view
                )

    @contextmanager
    def connection(
        self, readonly: bool = False, timeout: float | None = None
    ) -> Iterator[Any]:
        """Check out a connection from the primary, or a replica with ``readonly=True``.

        Args:
            readonly: The caller only reads: a replica may serve it.
            timeout: As for :meth:`poolkeeper.Pool.connection`.

        Raises:
            PoolError: no member can serve it (no primary seen yet).
        """
        if self._thread is None:
            self.open()
        deadline = self._deadline(timeout)
        with contextlib.ExitStack() as stack:
            while True:
                pool = self._pick(readonly, deadline)
                wait = self._slice(deadline)
                if pool is None:
                    time.sleep(min(wait, _RETRY_PICK))  # a failover is under way
                    continue
                try:
                    conn = stack.enter_context(pool.connection(timeout=wait))
                    break
                except PoolTimeout:
                    # Look again: the refresh may have moved this role elsewhere.
                    if self._slice(deadline) <= 0:
                        raise
            self._checked_out(pool, readonly)
            try:
                yield conn
            finally:
                self._checked_in(pool)

    def close(self) -> None:
        """Stop refreshing and close every member pool."""
        if self._stop is not None:
            self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        for _, pool in self._pools():
            pool.close()

    def __enter__(self) -> Cluster:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
