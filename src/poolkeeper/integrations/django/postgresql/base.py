"""Django's PostgreSQL backend, with connections borrowed from a poolkeeper pool.

Settings::

    DATABASES = {
        "default": {
            "ENGINE": "poolkeeper.integrations.django.postgresql",
            "NAME": "mydatabase",
            "USER": "mydatabaseuser",
            "HOST": "127.0.0.1",
            "PORT": "5432",
            "CONN_MAX_AGE": 0,  # the pool keeps connections, Django must not
            "CONN_HEALTH_CHECKS": True,  # ping each connection on checkout
            "OPTIONS": {
                # poolkeeper.Pool arguments; True (the default) means defaults.
                "pool": {"min_size": 2, "max_size": 10, "timeout": 10},
            },
        }
    }

Everything else is Django's own psycopg 3 backend: this class only changes
where a connection comes from and where it goes when Django closes it.

How it fits Django's connection handling. Django keeps one
``DatabaseWrapper`` per thread (and per asyncio context, whose ORM calls run
in a worker thread). Each wrapper opens its connection lazily and closes it
when a request ends (``close_old_connections`` on ``request_finished``) or
when ``connection.close()`` is called. Here "open" borrows a connection from
one :class:`poolkeeper.Pool` shared by every wrapper of the same alias, and
"close" gives it back, rolling back anything left open; so connections are
reused across requests and threads while each request still starts clean,
and at most ``max_size`` connections exist however many threads serve
requests. A request that cannot get a connection within ``timeout`` fails
with :class:`poolkeeper.PoolTimeout`.

``CONN_MAX_AGE`` must stay 0 (as with Django's own ``OPTIONS["pool"]``):
persistent connections would keep a pool slot per thread between requests.
``CONN_HEALTH_CHECKS`` becomes the pool's ``check`` hook. New connections get
Django's time zone and ``assume_role`` settings once, through the pool's
``configure`` hook. Prepared statements are off by default (Django's
``prepare_threshold=None``), so the backend also works behind PgBouncer in
transaction mode.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar

from django.core.exceptions import (  # type: ignore[import-untyped,unused-ignore]
    ImproperlyConfigured,
)
from django.db.backends.base.base import NO_DB_ALIAS  # type: ignore[import-untyped,unused-ignore]
from django.db.backends.postgresql import (  # type: ignore[import-untyped,unused-ignore]
    base as pg_base,
)
from django.db.backends.postgresql.psycopg_any import (  # type: ignore[import-untyped,unused-ignore]
    is_psycopg3,
)

import poolkeeper

__all__ = ["DatabaseWrapper", "DjangoPool"]


class DjangoPool(poolkeeper.Pool[Any]):
    """A :class:`poolkeeper.Pool` with the ``getconn`` name Django's backend calls."""

    def getconn(self) -> Any:
        """Borrow a connection (Django's name for :meth:`acquire`)."""
        return self.acquire()


def _ping(conn: Any) -> None:
    # In autocommit mode the empty query opens no transaction; the flag is
    # restored because Django sets it itself only after the checkout.
    if conn.autocommit:
        conn.execute("")
        return
    conn.autocommit = True
    try:
        conn.execute("")
    finally:
        conn.autocommit = False


class DatabaseWrapper(pg_base.DatabaseWrapper):  # type: ignore[misc,unused-ignore]
    """Django's PostgreSQL ``DatabaseWrapper`` drawing connections from poolkeeper."""

    # One pool per database alias, shared by the wrappers of every thread.
    _poolkeeper_pools: ClassVar[dict[str, DjangoPool]] = {}
    _poolkeeper_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The pool that lent the current connection: settings changes in tests
        # may replace the alias's pool while a connection is out.
        self._poolkeeper_owner: DjangoPool | None = None

    @property
    def pool(self) -> DjangoPool | None:
        """The alias's poolkeeper pool, created on first use; None if pooling is off."""
        options = self.settings_dict["OPTIONS"].get("pool", True)
        if self.alias == NO_DB_ALIAS or options is False or options is None:
            return None
        pool = self._poolkeeper_pools.get(self.alias)
        if pool is None:
            with self._poolkeeper_lock:
                pool = self._poolkeeper_pools.get(self.alias)
                if pool is None:
                    pool = self._make_pool(options)
                    self._poolkeeper_pools[self.alias] = pool
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
        if not is_psycopg3:
            raise ImproperlyConfigured(
                "poolkeeper's Django backend needs psycopg 3: pip install 'psycopg[binary]'"
            )
        pool_options: dict[str, Any] = {} if options is True else dict(options)
        pool_options.setdefault("name", f"django-{self.alias}")
        connect_kwargs = self.get_connection_params()
        # Pooled connections rest in autocommit mode; Django sets the mode it
        # wants after each checkout.
        connect_kwargs["autocommit"] = True
        database = self.Database

        def connect() -> Any:
            return database.connect(**connect_kwargs)

        check = _ping if self.settings_dict.get("CONN_HEALTH_CHECKS") else None
        try:
            return DjangoPool(
                connect,
                configure=self._configure_connection,
                check=check,
                **pool_options,
            )
        except (TypeError, ValueError) as exc:
            raise ImproperlyConfigured(
                f"database {self.alias!r}: invalid OPTIONS['pool']: {exc}"
            ) from exc

    def close_pool(self) -> None:
        """Close the alias's pool; the next connection opens a new one."""
        with self._poolkeeper_lock:
            pool = self._poolkeeper_pools.pop(self.alias, None)
        if pool is not None:
            pool.close()

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        """Borrow a connection from the pool (or connect directly if pooling is off)."""
        pool = self.pool
        connection = super().get_new_connection(conn_params)
        self._poolkeeper_owner = pool
        return connection

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
