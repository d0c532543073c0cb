"""What every poolkeeper Django backend shares: one pool per alias, borrow, give back.

:class:`PooledDatabaseWrapper` is mixed in front of one of Django's own
``DatabaseWrapper`` classes (PostgreSQL, MySQL). It changes where a connection
comes from (``get_new_connection`` borrows from a :class:`DjangoPool`) and where
it goes when Django closes it (``_close`` gives it back); everything else stays
Django's. A backend module only says how to open, check and set up one raw
connection of its driver (:meth:`PooledDatabaseWrapper._poolkeeper_hooks`).

How it fits Django's connection handling. Django keeps one ``DatabaseWrapper``
per thread (and per asyncio context, whose ORM calls run in a worker thread).
Each wrapper opens its connection lazily and closes it when a request ends
(``close_old_connections`` on ``request_finished``) or when
``connection.close()`` is called. Here "open" borrows a connection from one
:class:`poolkeeper.Pool` shared by every wrapper of the same alias, and "close"
gives it back, rolling back anything left open; so connections are reused
across requests and threads while each request still starts clean, and at most
``max_size`` connections exist however many threads serve requests. A request
that cannot get a connection within ``timeout`` fails with
:class:`poolkeeper.PoolTimeout`.

``CONN_MAX_AGE`` must stay 0 (as with Django's own PostgreSQL
``OPTIONS["pool"]``): persistent connections would keep a pool slot per thread
between requests.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

from django.core.exceptions import (  # type: ignore[import-untyped,unused-ignore]
    ImproperlyConfigured,
)
from django.db.backends.base.base import (  # type: ignore[import-untyped,unused-ignore]
    NO_DB_ALIAS,
    BaseDatabaseWrapper,
)
from django.db.backends.base.features import (  # type: ignore[import-untyped,unused-ignore]
    BaseDatabaseFeatures,
)

import poolkeeper

__all__ = ["DjangoPool", "PoolHooks", "PooledDatabaseFeatures", "PooledDatabaseWrapper"]

#: Django's own tests that do not apply to a pooled backend, with Django's
#: reason (its PostgreSQL features skip the same two when its pool is on):
#: they expect ``CONN_HEALTH_CHECKS`` to ping a persistent connection at the
#: start of each request, where the pool checks each connection at checkout.
POOL_TEST_SKIPS = {
    "Pool does implicit health checks": {
        "backends.base.test_base.ConnectionHealthChecksTests.test_health_checks_enabled",
        "backends.base.test_base.ConnectionHealthChecksTests."
        "test_set_autocommit_health_checks_enabled",
    },
}


class DjangoPool(poolkeeper.Pool[Any]):
    """A :class:`poolkeeper.Pool` with the ``getconn`` name Django's backend calls."""

    def getconn(self) -> Any:
        """Borrow a connection (Django's name for :meth:`acquire`)."""
        return self.acquire()


@dataclass(frozen=True)
class PoolHooks:
    """How a backend opens, sets up and checks one raw driver connection.

    Attributes:
        connect: Opens a new driver connection (the pool's connect callable).
        configure: Run once on each new connection (the pool's ``configure``).
        check: Run before each checkout when ``CONN_HEALTH_CHECKS`` is on
            (the pool's ``check``); raises if the connection is unusable.
    """

    connect: Callable[[], Any]
    configure: Callable[[Any], Any] | None
    check: Callable[[Any], Any]


class PooledDatabaseFeatures(BaseDatabaseFeatures):  # type: ignore[misc,unused-ignore]
    """Mixin for a backend's ``DatabaseFeatures``: Django's test skips for pools."""

    @cached_property  # a cached attribute, as in Django: tests assign to it
    def django_test_skips(self) -> dict[str, set[str]]:
        """Django's skips for the backend, plus :data:`POOL_TEST_SKIPS` when pooled."""
        skips: dict[str, set[str]] = dict(super().django_test_skips)
        if self.connection.pool is not None:
            for reason, tests in POOL_TEST_SKIPS.items():
                skips[reason] = skips.get(reason, set()) | tests
        return skips


class PooledDatabaseWrapper(BaseDatabaseWrapper):  # type: ignore[misc,unused-ignore]
    """Mixin for a Django ``DatabaseWrapper`` drawing connections from poolkeeper.

    Put it first among the bases: ``class DatabaseWrapper(PooledDatabaseWrapper,
    django_backend.DatabaseWrapper)``, and implement :meth:`_poolkeeper_hooks`.
    """

    # One pool per (backend, database alias), shared by the wrappers of every thread.
    _poolkeeper_pools: ClassVar[dict[tuple[str, str], DjangoPool]] = {}
    _poolkeeper_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The pool that lent the current connection: settings changes in tests
        # may replace the alias's pool while a connection is out.
        self._poolkeeper_owner: DjangoPool | None = None

    def _poolkeeper_hooks(self, connect_kwargs: dict[str, Any]) -> PoolHooks:
        """The driver-specific part of the pool; ``connect_kwargs`` are Django's."""
        raise NotImplementedError

    def _poolkeeper_checkout(self, pool: DjangoPool | None, params: Any) -> Any:
        """Borrow from ``pool`` (Django's own connect when it is None)."""
        if pool is None:
            return super().get_new_connection(params)
        return pool.acquire()

    @property
    def _poolkeeper_key(self) -> tuple[str, str]:
        return (str(self.vendor), str(self.alias))

    @property
    def pool(self) -> DjangoPool | None:
        """The alias's poolkeeper pool, created on first use; None if pooling is off."""
        options = self.settings_dict["OPTIONS"].get("pool", True)
        if self.alias == NO_DB_ALIAS or options is False or options is None:
            return None
        key = self._poolkeeper_key
        pool = self._poolkeeper_pools.get(key)
        if pool is None:
            with self._poolkeeper_lock:
                pool = self._poolkeeper_pools.get(key)
                if pool is None:
                    pool = self._make_pool(options)
                    self._poolkeeper_pools[key] = pool
        return pool

    def _make_pool(self, options: Any) -> DjangoPool:
        if self.settings_dict.get("CONN_MAX_AGE", 0) != 0:
            # Django's own sentence first: code written against Django's
            # built-in pooling (and Django's test suite) matches on it.
            raise ImproperlyConfigured(
                "Pooling doesn't support persistent connections. "
                f"Database {self.alias!r}: poolkeeper pooling needs CONN_MAX_AGE = 0 "
                "(the pool keeps connections open; Django returns them after "
                "each request)."
            )
        if not (options is True or isinstance(options, dict)):
            raise ImproperlyConfigured(
                f"database {self.alias!r}: OPTIONS['pool'] must be True, False, "
                f"None or a dict of poolkeeper.Pool arguments, not {options!r}"
            )
        pool_options: dict[str, Any] = {} if options is True else dict(options)
        pool_options.setdefault("name", f"django-{self.alias}")
        hooks = self._poolkeeper_hooks(self.get_connection_params())
        check = hooks.check if self.settings_dict.get("CONN_HEALTH_CHECKS") else None
        try:
            pool = DjangoPool(
                hooks.connect,
                configure=hooks.configure,
                check=check,
                **pool_options,
            )
        except (TypeError, ValueError) as exc:
            raise ImproperlyConfigured(
                f"database {self.alias!r}: invalid OPTIONS['pool']: {exc}"
            ) from exc
        # Django lends connections itself: nobody writes `with pool.acquire()`.
        pool._held.warn_unaware = False
        return pool

    def close_pool(self) -> None:
        """Close the alias's pool; the next connection opens a new one."""
        with self._poolkeeper_lock:
            pool = self._poolkeeper_pools.pop(self._poolkeeper_key, None)
        if pool is not None:
            pool.close()

    def get_new_connection(self, conn_params: Any) -> Any:
        """Borrow a connection from the pool (or connect directly if pooling is off)."""
        pool = self.pool
        connection = self._poolkeeper_checkout(pool, conn_params)
        self._poolkeeper_owner = pool
        return connection

    def is_usable(self) -> bool:
        """Whether the connection works; False once it went back to the pool."""
        if getattr(self, "connection", None) is None:
            return False
        return bool(super().is_usable())

    def close_if_health_check_failed(self) -> None:
        """Django's per-request health check; the pool's ``check`` does it at checkout."""
        if self.pool is None:
            super().close_if_health_check_failed()

    def _close(self) -> None:
        # getattr: mypy cannot type the attribute of the untyped Django base class.
        connection: Any = getattr(self, "connection", None)
        if connection is None:
            return
        owner, self._poolkeeper_owner = self._poolkeeper_owner, None
        with self.wrap_database_errors:
            if owner is None:
                connection.close()
                return
            self.connection = None
            # Rolls back a transaction left open; a broken connection is
            # discarded and replaced by the pool instead of being reused.
            owner.release(connection)
