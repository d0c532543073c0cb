"""The cluster object for asyncio: :class:`AsyncCluster`."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any

from poolkeeper.cluster._base import (
    ClusterBase,
    Finding,
)
from poolkeeper.cluster._probe import patroni_members, probe_async
from poolkeeper.drivers._hosts import HostPort
from poolkeeper.errors import PoolTimeout

#: Seconds between looks at the routing while a write has no usable primary.
_RETRY_PICK = 0.02


class AsyncCluster(ClusterBase):
    """A pool per PostgreSQL cluster member, with read/write routing (asyncio).

    The asyncio twin of :class:`poolkeeper.Cluster`, with the same arguments;
    member pools are :class:`poolkeeper.AsyncPool`, members are probed
    concurrently, and the refresh runs as a task.
    """

    _task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Discover the members and their roles, then keep refreshing in the background."""
        if self._task is not None:
            return
        await self.refresh()
        self._task = asyncio.create_task(
            self._run(), name=f"poolkeeper-{self.name}-refresh"
        )

    async def refresh(self) -> None:
        """Re-read the membership, then probe every member's role and lag now."""
        from poolkeeper._async.pool import AsyncPool

        members = (
            await asyncio.to_thread(patroni_members, self._patroni, self.probe_timeout)
            if self._patroni is not None
            else None
        )
        wanted = self._members_to_probe(members)
        for hostport, url in self._new_members([hp for hp, _ in wanted]):
            pool = AsyncPool(url, **self._pool_kwargs(hostport))
            if not self._add(hostport, pool):
                await pool.close()
        leader = self._lead(members)
        pools = dict(self._pools())
        started = time.monotonic()
        findings: list[Finding] = await asyncio.gather(
            *(self._probe(pools[hp], hp, name) for hp, name in wanted)
        )
        if self._probes_took_long(started):
            assert self._patroni is not None
            try:
                view = await asyncio.to_thread(
                    patroni_members, self._patroni, self.probe_timeout
                )
            except OSError:
                pass  # keep the leader of the view the probes started from
            else:
                leader = self._lead(view)
        for pool in self._apply(findings, members, leader):
            await pool.close()

    async def _probe(self, pool: Any, hostport: HostPort, name: str | None) -> Finding:
        down = self._down(pool)
        if down is not None:
            return (hostport, down, name)  # not waited on (see _down)
        try:
            async with pool.connection(timeout=self.probe_timeout) as conn:
                return (hostport, await probe_async(conn), name)
        except Exception as exc:
            return (hostport, exc, name)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_interval)
            try:
                await self.refresh()
            except Exception:
                self._router.refresh_errors += (
                    1  # Patroni unreachable: keep the last view
                )

    @asynccontextmanager
    async def connection(
        self, readonly: bool = False, timeout: float | None = None
    ) -> AsyncIterator[Any]:
        """Check out a connection from the primary, or a replica with ``readonly=True``.

        Args:
            readonly: The caller only reads: a replica may serve it.
            timeout: As for :meth:`poolkeeper.AsyncPool.connection`.

        Raises:
            PoolError: no member can serve it (no primary seen yet).
        """
        if self._task is None:
            await self.open()
        deadline = self._deadline(timeout)
        async with contextlib.AsyncExitStack() as stack:
            while True:
                pool = self._pick(readonly, deadline)
                wait = self._slice(deadline)
                if pool is None:
                    await asyncio.sleep(min(wait, _RETRY_PICK))  # a failover
                    continue
                try:
                    conn = await stack.enter_async_context(
                        pool.connection(timeout=wait)
                    )
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

    async def close(self) -> None:
        """Stop refreshing and close every member pool."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for _, pool in self._pools():
            await pool.close()

    async def __aenter__(self) -> AsyncCluster:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
