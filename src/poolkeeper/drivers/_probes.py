"""The idle probes the thread pool runs on every return, compiled with the core.

A connection goes back to the idle stack without a rollback only when the
driver's idle probe says it is open, healthy, outside a transaction and
carries nothing a borrower left (see ``base.py``). The probe runs on every
cycle, so the compiled build (``hatch_build.py``) compiles this module with
the core: a call of a native function instead of a Python frame. It holds
plain functions of an untyped connection only (no driver import, no class),
so mypyc takes it and the pure build runs the same source.
"""

from __future__ import annotations

from typing import Any, Final

#: libpq's PQTRANS_IDLE (``_libpq.PQ_IDLE``), a literal so mypyc inlines it.
_PQ_IDLE: Final = 0


def psycopg_idle(conn: Any) -> bool:
    """psycopg 3: idle, open and clean (see ``_psycopg_state``)."""
    # libpq reports PQTRANS_UNKNOWN for a closed or broken connection, so one
    # compare says "open, healthy and outside a transaction"; the rest is
    # psycopg's client-side state a borrower may leave (see clear_state).
    # Attribute reads only (no calls): this runs on every return.
    # Typed int: mypyc compares it natively, not with a generic compare.
    status: int = conn.pgconn.transaction_status
    if status != _PQ_IDLE:
        return False
    return not (
        conn._num_transactions
        or conn._tpc
        or conn._notice_handlers.changed
        or conn._notify_handlers.changed
        or conn._notifies_backlog
    )


def psycopg2_idle(conn: Any) -> bool:
    """psycopg2: idle, open and nothing left in ``notices``/``notifies``."""
    # get_transaction_status() is libpq's status without building a
    # ConnectionInfo object (as conn.info does); libpq reports UNKNOWN for a
    # connection closed by the client or lost. Then nothing the borrower
    # left in conn.notices / conn.notifies (see the adapter's clear_state).
    status: int = conn.get_transaction_status()
    if status != _PQ_IDLE:
        return False
    return not (conn.notices or conn.notifies)
