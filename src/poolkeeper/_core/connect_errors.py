"""What a failed connect means for the callers waiting on it.

A driver adapter sorts each connect error into a :class:`ConnectFault` (see
:mod:`poolkeeper.drivers._connect_errors`); this module holds the rule the
core applies to that answer, and the small helpers that turn a driver's
exception into something the pool may hand to a caller: its text masked, and
one copy per caller, so that callers raising it in parallel never share (and
keep growing) one traceback.
"""

from __future__ import annotations

import contextlib
import copy
import enum
from collections.abc import Iterable
from typing import TypeVar

from poolkeeper._config import scrub

_E = TypeVar("_E", bound=BaseException)


class ConnectFault(enum.Enum):
    """Why a connect failed, as far as waiting callers are concerned."""

    AUTH = "auth"
    """Bad password, unknown role, no ``pg_hba.conf`` entry, access denied."""
    DATABASE = "database"
    """The database does not exist (or, for sqlite, its file cannot be opened)."""
    HOST = "host"
    """The host name does not resolve (DNS)."""
    TLS = "tls"
    """TLS was refused: no TLS on the server, an untrusted or mismatched certificate."""
    CONFIG = "config"
    """The driver rejected a connect option (an unknown keyword, a bad value)."""
    REFUSED = "refused"
    """Nothing listens at the address (TCP reset, no Unix socket)."""
    BUSY = "busy"
    """The server has no free connection slot (too many clients): a retry may
    succeed, but never sooner than the backoff (the pool does not hammer a
    server that is full)."""
    TRANSIENT = "transient"
    """Anything else: a timeout, a server starting up or shutting down."""


#: Faults that no retry within a caller's timeout can fix.
PERMANENT_FAULTS = frozenset(
    {
        ConnectFault.AUTH,
        ConnectFault.DATABASE,
        ConnectFault.HOST,
        ConnectFault.TLS,
        ConnectFault.CONFIG,
    }
)


def is_permanent(fault: ConnectFault, *, ever_connected: bool) -> bool:
    """Tell whether waiting callers should get a connect error at once.

    A refused connection is permanent only while the pool has never reached
    its server: a server that answered before and now refuses is most likely
    restarting, and callers wait for it within their timeout.
    """
    if fault is ConnectFault.REFUSED:
        return not ever_connected
    return fault in PERMANENT_FAULTS


def mask_error(error: BaseException, secrets: Iterable[str]) -> None:
    """Mask every secret in ``error``'s arguments and string attributes, in place.

    The pool hands the driver's own exception to callers; a driver that quotes
    its connection string must not leak a password through it.
    """
    if not secrets:
        return
    # A C type may refuse either assignment: then what it says stays as is.
    with contextlib.suppress(AttributeError, TypeError):
        error.args = tuple(
            scrub(a, secrets) if isinstance(a, str) else a for a in error.args
        )
    for name, value in list(getattr(error, "__dict__", {}).items()):
        if isinstance(value, str) and scrub(value, secrets) != value:
            with contextlib.suppress(AttributeError, TypeError):
                setattr(error, name, scrub(value, secrets))


def raisable(error: BaseException) -> BaseException:
    """Return a copy of ``error`` for one caller to raise, chained to ``error``.

    The copy has the driver's type, arguments and attributes; its
    ``__cause__`` is the original, whose traceback shows the failed connect.
    The original is returned when the driver's type cannot be copied.
    """
    try:
        fresh = copy.copy(error)
    except Exception:
        return error
    if type(fresh) is not type(error) or fresh is error:
        return error
    fresh.__traceback__ = None
    fresh.__cause__ = error
    fresh.__suppress_context__ = True
    return fresh


def chained(error: _E, cause: BaseException | None) -> _E:
    """Return ``error`` set up the way ``raise error from cause`` would.

    The compiled build's ``raise`` ignores a ``from`` clause (mypyc 2.4), so
    the compiled modules chain with ``raise chained(error, cause)``.
    """
    error.__cause__ = cause
    error.__suppress_context__ = True
    return error


def first_line(error: BaseException, secrets: Iterable[str]) -> str:
    """Return ``TypeName: first line of the message``, with secrets masked."""
    text = str(error).strip().splitlines()
    line = text[0].strip() if text else ""
    name = type(error).__name__
    return scrub(f"{name}: {line}" if line else name, secrets)
