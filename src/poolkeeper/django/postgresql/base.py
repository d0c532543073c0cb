"""Django's PostgreSQL backend, with connections borrowed from a poolkeeper pool.

Settings::

    DATABASES = {
        "default": {
            "ENGINE": "poolkeeper.django.postgresql",
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
where a connection comes from and where it goes when Django closes it (see
:mod:`poolkeeper.django._pooled` for how that fits Django's
connection handling; the MySQL backend shares it).

``CONN_HEALTH_CHECKS`` becomes the pool's ``check`` hook. Wrappers of an
alias share connections, so one whose ``OPTIONS`` name no
``isolation_level`` resets psycopg's to None (the server default) at
checkout: another wrapper's level does not carry over. New connections get
Django's time zone and ``assume_role`` settings once, through the pool's
``configure`` hook. Prepared statements are off by default (Django's
``prepare_threshold=None``), so the backend also works behind PgBouncer in
transaction mode.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import (  # type: ignore[import-untyped,unused-ignore]
    ImproperlyConfigured,
)
from django.db.backends.postgresql import (  # type: ignore[import-untyped,unused-ignore]
    base as pg_base,
)
from django.db.backends.postgresql import (  # type: ignore[import-untyped,unused-ignore]
    features as pg_features,
)
from django.db.backends.postgresql.psycopg_any import (  # type: ignore[import-untyped,unused-ignore]
    is_psycopg3,
)

from poolkeeper.django._pooled import (
    DjangoPool,
    PooledDatabaseFeatures,
    PooledDatabaseWrapper,
    PoolHooks,
)

__all__ = ["DatabaseWrapper", "DjangoPool"]


class DatabaseFeatures(PooledDatabaseFeatures, pg_features.DatabaseFeatures):  # type: ignore[misc,unused-ignore]
    """Django's PostgreSQL features, with Django's test skips for pooled backends."""


class DatabaseWrapper(PooledDatabaseWrapper, pg_base.DatabaseWrapper):  # type: ignore[misc,unused-ignore]
    """Django's PostgreSQL ``DatabaseWrapper`` drawing connections from poolkeeper."""

    features_class = DatabaseFeatures

    def _poolkeeper_hooks(self, connect_kwargs: dict[str, Any]) -> PoolHooks:
        if not is_psycopg3:
            raise ImproperlyConfigured(
                "poolkeeper's Django backend needs psycopg 3: pip install 'psycopg[binary]'"
            )
        # Imported here: the adapter imports psycopg 3, checked just above.
        from poolkeeper.drivers.psycopg import ping as psycopg_ping

        # Pooled connections rest in autocommit mode; Django sets the mode it
        # wants after each checkout.
        connect_kwargs["autocommit"] = True
        database = self.Database

        def connect() -> Any:
            return database.connect(**connect_kwargs)

        return PoolHooks(
            connect, configure=self._configure_connection, check=psycopg_ping
        )

    def _poolkeeper_checkout(self, pool: DjangoPool | None, params: Any) -> Any:
        # Django's own psycopg code borrows through ``self.pool.getconn()``
        # and applies OPTIONS["isolation_level"] to the borrowed connection.
        connection = pg_base.DatabaseWrapper.get_new_connection(self, params)
        if pool is not None and "isolation_level" not in self.settings_dict["OPTIONS"]:
            # Django sets psycopg's isolation_level only when OPTIONS names
            # one; a level another wrapper of the alias set on this pooled
            # connection must not carry over (None: the server's default).
            connection.isolation_level = None
        return connection
