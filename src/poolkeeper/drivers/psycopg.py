"""psycopg 3 adapters, sync (:class:`PsycopgDriver`) and asyncio (:class:`AsyncPsycopgDriver`).

Transaction state and brokenness come from libpq's connection status without
I/O. The ping is an empty query run in autocommit mode, the cheapest round
trip the protocol has. Connections get libpq TCP keepalives and a 10 s
``connect_timeout`` unless the URL or ``connect_args`` set them (see
:data:`poolkeeper.drivers._libpq.LIBPQ_DEFAULTS`); psycopg enforces
``connect_timeout`` itself for async connections too.

``query_timeout`` support: a command is in progress while libpq's transaction
status is ``ACTIVE``; ``abort`` shuts down the socket (``conn.pgconn.socket``),
so a call blocked on a frozen server fails with ``OperationalError`` at once.

``settled``: an interrupted connection (a cancelled task, Ctrl-C) is kept
when libpq says no command is in progress: psycopg cancels the command on the
server and reads the reply before it re-raises, so a rollback makes the
connection clean (see docs/RELIABILITY.md, "Cancellation without churn").

``reset_session`` runs ``DISCARD ALL``. psycopg notices that command and
forgets its own prepared statements, so its automatic preparation keeps
working afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from poolkeeper._config import URL
from poolkeeper._credentials import awith_providers, with_providers
from poolkeeper.drivers._hosts import ROLE_QUERY, Role, role_from
from poolkeeper.drivers._libpq import (
    async_connector,
    libpq_does_it,
    libpq_kwargs,
    libpq_target,
    sync_connector,
)
from poolkeeper.drivers._psycopg_state import (
    PsycopgState,
    clear_state,
    end_blocks,
    status,
)
from poolkeeper.drivers.base import TxStatus


def url_to_kwargs(url: URL, connect_args: dict[str, Any]) -> dict[str, Any]:
    """Turn a parsed URL into libpq keyword arguments (``connect_args`` win).

    Raises:
        ConfigError: a URL query parameter is not a libpq keyword.
    """
    return libpq_kwargs(
        url, connect_args, parse_conninfo=conninfo_to_dict, make_conninfo=make_conninfo
    )


async def _fetch_role_row(conn: Any) -> Any:
    cursor = await conn.execute(ROLE_QUERY)
    row = await cursor.fetchone()
    await conn.rollback()
    return row


def ping(conn: Any) -> None:
    """Run an empty query in autocommit mode (it opens no transaction).

    The autocommit flag is put back as it was; Django's backend uses this as
    its ``CONN_HEALTH_CHECKS`` check too.
    """
    if conn.autocommit:
        conn.execute("")
        return
    conn.autocommit = True
    try:
        conn.execute("")
    finally:
        with contextlib.suppress(Exception):
            conn.autocommit = False


class PsycopgDriver(PsycopgState):
    """Sync psycopg 3 adapter (``postgresql+psycopg://``)."""

    is_async = False
    #: The URL's ``target_session_attrs`` (None: built from a callable).
    target_session_attrs: str | None = None

    def __init__(self, connect: Callable[[], Any]) -> None:
        self._connect = connect

    @classmethod
    def from_url(cls, url: URL, connect_args: dict[str, Any]) -> PsycopgDriver:
        """Build the adapter for a parsed URL (multi-host: see ``_hosts``)."""
        kwargs = url_to_kwargs(url, connect_args)
        target = libpq_target(url, connect_args)
        driver = cls(
            sync_connector(
                target, kwargs, with_providers(psycopg.Connection.connect), pq.version()
            )
        )
        driver.target_session_attrs = target.target_session_attrs
        return driver

    def connect(self) -> Any:
        return self._connect()

    def commit(self, conn: Any) -> None:
        end_blocks(conn)
        conn.commit()

    def rollback(self, conn: Any) -> None:
        end_blocks(conn)
        conn.rollback()

    def clear_state(self, conn: Any) -> None:
        """Forget transaction blocks and the handlers a borrower added (no I/O)."""
        clear_state(conn)

    def ping(self, conn: Any) -> None:
        ping(conn)

    def session_role(self, conn: Any) -> Role:
        """Read the session's role with one query (:data:`~poolkeeper.drivers._hosts.ROLE_QUERY`),
        leaving no transaction open: the pool asks it of a connection whose
        server turned suspect (see ``_hoststate``)."""
        if conn.autocommit:
            row = conn.execute(ROLE_QUERY).fetchone()
        else:
            conn.autocommit = True
            try:
                row = conn.execute(ROLE_QUERY).fetchone()
            finally:
                with contextlib.suppress(Exception):
                    conn.autocommit = False
        return role_from(*row)

    def reset_session(self, conn: Any) -> None:
        """Roll back, then run ``DISCARD ALL`` to drop every piece of session state.

        Clears settings, temporary tables, prepared statements, advisory locks
        and ``LISTEN`` registrations. ``DISCARD ALL`` cannot run inside a
        transaction, hence the rollback and the autocommit switch.
        """
        if status(conn) is not TxStatus.IDLE:
            conn.rollback()
        autocommit = conn.autocommit
        conn.autocommit = True
        try:
            conn.execute("DISCARD ALL")
        finally:
            conn.autocommit = autocommit

    def close(self, conn: Any) -> None:
        with contextlib.suppress(Exception):
            conn.close()


class AsyncPsycopgDriver(PsycopgState):
    """Asyncio psycopg 3 adapter (``postgresql+psycopg://`` with AsyncPool)."""

    is_async = True
    #: The URL's ``target_session_attrs`` (None: built from a callable).
    target_session_attrs: str | None = None

    def __init__(self, connect: Callable[[], Awaitable[Any]]) -> None:
        self._connect = connect

    @classmethod
    def from_url(cls, url: URL, connect_args: dict[str, Any]) -> AsyncPsycopgDriver:
        """Build the adapter for a parsed URL (multi-host: see ``_hosts``).

        psycopg runs the host loop of async connections itself, with a
        timeout per host; libpq checks each host's role.
        """
        kwargs = url_to_kwargs(url, connect_args)
        target = libpq_target(url, connect_args)
        native = libpq_does_it(target, pq.version())
        driver = cls(
            async_connector(
                target,
                kwargs,
                awith_providers(psycopg.AsyncConnection.connect),
                _fetch_role_row,
                native=native,
            )
        )
        driver.target_session_attrs = target.target_session_attrs
        return driver

    async def connect(self) -> Any:
        return await self._connect()

    async def commit(self, conn: Any) -> None:
        end_blocks(conn)
        await conn.commit()

    async def rollback(self, conn: Any) -> None:
        end_blocks(conn)
        await conn.rollback()

    async def clear_state(self, conn: Any) -> None:
        """Forget transaction blocks and the handlers a borrower added (no I/O)."""
        clear_state(conn)

    async def ping(self, conn: Any) -> None:
        if conn.autocommit:
            await conn.execute("")
            return
        await conn.set_autocommit(True)
        try:
            await conn.execute("")
        finally:
            with contextlib.suppress(Exception):
                await conn.set_autocommit(False)

    async def session_role(self, conn: Any) -> Role:
        """Read the session's role with one query (:data:`~poolkeeper.drivers._hosts.ROLE_QUERY`),
        leaving no transaction open: the pool asks it of a connection whose
        server turned suspect (see ``_hoststate``)."""
        if conn.autocommit:
            row = await (await conn.execute(ROLE_QUERY)).fetchone()
        else:
            await conn.set_autocommit(True)
            try:
                row = await (await conn.execute(ROLE_QUERY)).fetchone()
            finally:
                with contextlib.suppress(Exception):
                    await conn.set_autocommit(False)
        return role_from(*row)

    async def reset_session(self, conn: Any) -> None:
        """Roll back, then run ``DISCARD ALL`` (see :meth:`PsycopgDriver.reset_session`)."""
        if status(conn) is not TxStatus.IDLE:
            await conn.rollback()
        autocommit = conn.autocommit
        await conn.set_autocommit(True)
        try:
            await conn.execute("DISCARD ALL")
        finally:
            await conn.set_autocommit(autocommit)

    async def close(self, conn: Any) -> None:
        with contextlib.suppress(Exception):
            await conn.close()
