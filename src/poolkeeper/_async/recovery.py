"""Getting back a connection whose holder was interrupted (a cancelled task).

A task cancelled while it validates a connection, or while the pool ends its
transaction on the way back, leaves that connection behind mid-conversation.
Closing it is always safe but costs a reconnect per cancellation: a storm of
cancelled requests then turns into a storm of connects. So the pool
:meth:`~poolkeeper._core.state.PoolState.reclaim`-s the connection and, in the
background (the caller's cancellation is never delayed), makes it clean:

* an interrupted validation ping is left to finish within its budget (cut
  off past it, as when the caller waits), and a connection that answers goes
  back to the pool;
* otherwise, if the driver can tell that no command is in progress any more
  (:func:`~poolkeeper.drivers.base.settled_check`; psycopg 3 cancels an
  interrupted command on the server and reads the reply itself; asyncpg
  does so in the background, and the driver's ``wait_settled`` waits for it,
  within :data:`SETTLE_TIMEOUT`), the
  transaction is rolled back, the client-side state a borrower left is
  cleared and the ``reset`` hook run, as on any return;
* otherwise its state is unknown (a reply half read, a driver that closed it
  on cancellation): it is closed, counted under the reason ``"cancelled"``,
  which, unlike ``"broken"``, does not make its siblings suspect.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from poolkeeper._concurrency import acall, acall_within
from poolkeeper._core.entry import PoolEntry
from poolkeeper.drivers.base import TxStatus, settled_check

if TYPE_CHECKING:
    from poolkeeper._async.housekeeping import AsyncHousekeeping

logger = logging.getLogger("poolkeeper.pool")

#: Seconds a rollback of a reclaimed connection may take before the
#: connection is cut off and closed (psycopg waits as long for its cancel).
RECOVER_TIMEOUT = 5.0

#: Seconds a driver may take to finish an interrupted command in the
#: background (asyncpg's cancel request and the rest of the reply) before
#: the connection is cut off and closed. A cancel normally takes a round
#: trip or two; one that takes longer means a slow or hung server, and the
#: slot is worth more to the callers waiting for it than the connection.
SETTLE_TIMEOUT = 0.5


async def arecover(
    pool: AsyncHousekeeping[Any], entry: PoolEntry, pending: Any, budget: float
) -> None:
    """Make a reclaimed connection reusable, or close it; then give it back.

    Args:
        pool: The pool that reclaimed ``entry``.
        entry: The connection, reclaimed (see the module docstring).
        pending: The interrupted validation ping, still running, or None.
        budget: Seconds ``pending`` may still take.
    """
    conn = entry.conn
    reason = "cancelled"
    try:
        if pending is not None:
            reason = "check"  # no answer: the server's problem, not the caller's
            await acall_within(_same, pending, budget, _abort_of(pool))
            ok = not pool._driver.is_broken(conn)
        else:
            ok = await _settle(pool, conn)
    except Exception as exc:
        logger.info(
            "pool %r: an interrupted connection could not be recovered, closing: %s",
            pool.name,
            pool._describe(exc),
        )
        ok = False
    state = pool._state
    with pool._lock:
        waiter = state.give_back(entry, time.monotonic(), ok=ok, reason=reason)
    await pool._after_checkin(waiter, not ok and reason != "cancelled")


def _same(x: Any) -> Any:
    return x


def _abort_of(pool: AsyncHousekeeping[Any]) -> Any:
    abort = pool._abort
    return abort if abort is not None else _ignore


def _ignore(conn: Any) -> None:
    return None


async def _settle(pool: AsyncHousekeeping[Any], conn: Any) -> bool:
    """Roll back and reset a connection whose driver says it is between messages."""
    driver = pool._driver
    settled = settled_check(driver)
    if settled is None:
        return False
    wait = getattr(driver, "wait_settled", None)
    if wait is not None:
        # The driver finishes an interrupted command in the background
        # (asyncpg's cancel request and the rest of the reply): let it.
        await acall_within(wait, conn, SETTLE_TIMEOUT, _abort_of(pool))
    if not settled(conn):
        return False
    if driver.transaction_status(conn) is not TxStatus.IDLE:
        if pool._abort is not None:
            await acall_within(driver.rollback, conn, RECOVER_TIMEOUT, pool._abort)
        else:
            await driver.rollback(conn)
    if pool._clear_state is not None:
        await pool._clear_state(conn)
    if pool._reset is not None:
        await acall(pool._reset, conn)
    return settled(conn) and pool._idle_probe(conn) == pool._idle_value
