"""The optional full session reset that some adapters offer.

The pool's cheap reset on return is a rollback of any open transaction. A
*full* reset also clears what a previous borrower may have left in the session:
settings (``SET``), temporary tables, prepared statements, advisory locks,
user variables. Adapters that can do this cheaply implement
``reset_session(conn)``:

==============  ===========================================================
PostgreSQL      ``DISCARD ALL`` (psycopg, psycopg2, aiopg); asyncpg runs the
                same steps except ``DEALLOCATE ALL``, because asyncpg keeps a
                cache of prepared statements that must stay valid.
MariaDB/MySQL   ``COM_RESET_CONNECTION`` (PyMySQL, aiomysql), then the
                driver's own session setup (character set, ``sql_mode``,
                ``init_command``, autocommit) is replayed. mysqlclient does
                not expose that command; it uses ``COM_CHANGE_USER`` with the
                credentials from the URL.
==============  ===========================================================

``reset_session`` rolls back an open transaction first. If it raises, the
session is in an unknown state and the connection must be closed rather than
reused; that is the documented fallback wherever a server or driver lacks the
command (for example MySQL older than 5.7.3 or MariaDB older than 10.2.4).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

__all__ = ["AsyncSessionResetter", "SessionResetter", "supports_reset_session"]


@runtime_checkable
class SessionResetter(Protocol):
    """A sync adapter that can fully reset a connection's session state."""

    def reset_session(self, conn: Any) -> None:
        """Roll back and clear all session state of ``conn``; raise if that fails."""
        ...


@runtime_checkable
class AsyncSessionResetter(Protocol):
    """An asyncio adapter that can fully reset a connection's session state."""

    async def reset_session(self, conn: Any) -> None:
        """Roll back and clear all session state of ``conn``; raise if that fails."""
        ...


def supports_reset_session(driver: object) -> bool:
    """Tell whether ``driver`` offers ``reset_session`` (sync or asyncio).

    An adapter may have the method but not the means for some connections
    (mysqlclient built from a callable does not know the credentials): it
    then says so with a false ``can_reset_session``.
    """
    return callable(getattr(driver, "reset_session", None)) and bool(
        getattr(driver, "can_reset_session", True)
    )
