"""A primary with streaming replicas, for multi-host and read/write routing tests.

Built on :class:`~tests.support.pgcluster.PgCluster`: the primary is a normal
throwaway cluster; each replica's data directory comes from ``pg_basebackup -R``
against it (so it starts as a hot standby streaming from the primary), on its
own free loopback port and temporary directory, run as the ``postgres`` OS user.

Faults for failover tests: :meth:`Member.promote` (``pg_ctl promote``),
:meth:`Member.crash` (``kill -9`` of the postmaster), :meth:`Member.make_read_only`
(what a switchover leaves on the old primary: ``ALTER SYSTEM SET
default_transaction_read_only = on`` and a reload), and replay pause/resume to
make a replica lag.

Everything is stopped by pid and removed by :meth:`ReplicaSet.destroy` (and by
each member's finalizer if a test forgets).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from tests.support.pgcluster import PgCluster, PgClusterError, pg_available

__all__ = ["Member", "ReplicaSet", "replica_set"]

#: What every member runs with; a replica copies the primary's configuration.
_SETTINGS: dict[str, str | int] = {
    "wal_level": "replica",
    "max_wal_senders": 10,
    "hot_standby": "on",
    "wal_receiver_status_interval": "1s",
    "hot_standby_feedback": "on",
}


class Member(PgCluster):
    """One server of a :class:`ReplicaSet`: the primary, or a replica of ``source``.

    Args:
        source: The server to copy with ``pg_basebackup -R`` (None: ``initdb``).
        **kwargs: As for :class:`PgCluster`.
    """

    def __init__(self, source: Member | None = None, **kwargs: Any) -> None:
        super().__init__(settings=_SETTINGS, **kwargs)
        self.source = source

    def _run(self, program: str, args: Sequence[str]) -> None:
        if program == "initdb" and self.source is not None:
            # A replica's data directory is a base backup of its source, with
            # standby.signal and primary_conninfo written by -R.
            program, args = (
                "pg_basebackup",
                [
                    *("-D", str(self.datadir), "-h", self.source.host),
                    *("-p", str(self.source.port), "-U", "postgres"),
                    *("-R", "-X", "stream", "-c", "fast", "--no-sync"),
                ],
            )
        super()._run(program, args)

    def query(self, query: str, params: Sequence[Any] = ()) -> tuple[Any, ...]:
        """Run one statement as superuser over the unix socket; return its first row."""
        return tuple(self._admin_query(query, params))

    def execute(self, statement: str, params: Sequence[Any] = ()) -> None:
        """Run a statement that returns no rows, as superuser (autocommit)."""
        with self._admin_lock:
            self._admin_conn().execute(statement, params)

    def is_in_recovery(self) -> bool:
        """Whether the server is a standby (``pg_is_in_recovery()``)."""
        return bool(self.query("SELECT pg_is_in_recovery()")[0])

    def promote(self, timeout: float = 30.0) -> None:
        """``pg_ctl promote`` and wait until the server accepts writes."""
        self._pg_ctl("promote", "-w", "-t", str(int(timeout)))

    def crash(self) -> None:
        """``kill -9`` the postmaster (its backends exit on their own)."""
        pid = self.postmaster_pid()
        self._close_admin()
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while self.is_running and time.monotonic() < deadline:
            time.sleep(0.02)
        # Orphaned backends notice the dead postmaster within a moment; until
        # then they keep the shared memory, so a restart could fail.
        time.sleep(0.2)

    def make_read_only(self) -> None:
        """Turn a primary read-only for new transactions, without stopping it."""
        self.set_guc("default_transaction_read_only", True)

    def pause_replay(self) -> None:
        """Stop applying WAL on this replica (it keeps receiving it): lag grows."""
        self.query("SELECT pg_wal_replay_pause()")

    def resume_replay(self) -> None:
        """Apply WAL again after :meth:`pause_replay`."""
        self.query("SELECT pg_wal_replay_resume()")

    def replay_lag(self) -> float:
        """Seconds this replica's replay is behind (0 on a primary or a caught-up replica).

        0 when everything received is replayed (an idle primary sends no new
        commits, so the age of the last replayed one says nothing); else the
        age of the last replayed commit (or of the server start, if none yet).
        """
        row = self.query(
            "SELECT CASE WHEN NOT pg_is_in_recovery()"
            " OR pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0"
            " ELSE extract(epoch FROM now() - coalesce("
            "pg_last_xact_replay_timestamp(), pg_postmaster_start_time())) END"
        )
        return float(row[0])


class ReplicaSet:
    """A primary and ``replicas`` streaming replicas on free loopback ports.

    Args:
        replicas: How many replicas to start.
        max_connections: Per server.
    """

    def __init__(self, replicas: int = 2, max_connections: int = 30) -> None:
        self.primary = Member(max_connections=max_connections)
        self.replicas = [
            Member(self.primary, max_connections=max_connections)
            for _ in range(replicas)
        ]

    @property
    def members(self) -> list[Member]:
        """The primary first, then the replicas (as started, whatever they are now)."""
        return [self.primary, *self.replicas]

    def start(self, timeout: float = 30.0) -> ReplicaSet:
        """Start the primary, then each replica, and wait until all stream."""
        self.primary.start()
        for replica in self.replicas:
            replica.start()
        self.wait_streaming(timeout)
        return self

    def wait_streaming(self, timeout: float = 30.0) -> None:
        """Wait until the primary sees every replica ``streaming``.

        Raises:
            PgClusterError: not within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        want = len(self.replicas)
        while True:
            row = self.primary.query(
                "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"
            )
            if int(row[0]) >= want:
                return
            if time.monotonic() > deadline:
                raise PgClusterError(
                    f"{row[0]} of {want} replicas streaming after {timeout} s"
                )
            time.sleep(0.05)

    def wait_replayed(self, timeout: float = 10.0) -> None:
        """Wait until every running replica has replayed the primary's current WAL."""
        lsn = self.primary.query("SELECT pg_current_wal_lsn()::text")[0]
        deadline = time.monotonic() + timeout
        for replica in self.replicas:
            while (
                replica.is_running
                and replica.is_in_recovery()
                and not replica.query(
                    "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,)
                )[0]
            ):
                if time.monotonic() > deadline:
                    raise PgClusterError(f"replica {replica.port} did not catch up")
                time.sleep(0.02)

    def url(
        self, driver: str = "psycopg", dbname: str = "postgres", **params: Any
    ) -> str:
        """A multi-host URL naming every member (primary first)."""
        hosts = ",".join(f"{m.host}:{m.port}" for m in self.members)
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return f"postgresql+{driver}://postgres@{hosts}/{dbname}" + (
            f"?{query}" if query else ""
        )

    def destroy(self) -> None:
        """Stop every member immediately and delete their directories."""
        for member in reversed(self.members):
            member.destroy()

    def __enter__(self) -> ReplicaSet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.destroy()


@contextlib.contextmanager
def replica_set(replicas: int = 2) -> Iterator[ReplicaSet]:
    """Start a :class:`ReplicaSet` (skipping when PostgreSQL binaries are missing).

    Intended for fixtures: ``yield from`` it inside a session-scoped fixture
    for read-only tests, or a function-scoped one for tests that promote or
    crash a member.
    """
    reason = pg_available()
    if reason is not None:
        pytest.skip(f"cannot create a PostgreSQL replica set: {reason}")
    cluster = ReplicaSet(replicas)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()
