"""Django's MySQL/MariaDB backend, with connections borrowed from a poolkeeper pool.

Settings::

    DATABASES = {
        "default": {
            "ENGINE": "poolkeeper.django.mysql",
            "NAME": "mydatabase",
            "USER": "mydatabaseuser",
            "HOST": "127.0.0.1",
            "PORT": "3306",
            "CONN_MAX_AGE": 0,  # the pool keeps connections, Django must not
            "CONN_HEALTH_CHECKS": True,  # ping each connection on checkout
            "OPTIONS": {
                # poolkeeper.Pool arguments; True (the default) means defaults.
                "pool": {"min_size": 2, "max_size": 10, "timeout": 10},
            },
        }
    }

Everything else is Django's own MySQL backend (``django.db.backends.mysql``,
on mysqlclient): this class only changes where a connection comes from and
where it goes when Django closes it (see
:mod:`poolkeeper.django._pooled` for how that fits Django's
connection handling; the PostgreSQL backend shares it). The other
``OPTIONS`` keys still go to ``MySQLdb.connect`` and ``isolation_level`` is
Django's.

``CONN_HEALTH_CHECKS`` becomes the pool's ``check`` hook (``COM_PING``).
Django's per-connection setup (``SET SESSION TRANSACTION ISOLATION LEVEL``,
and ``SQL_AUTO_IS_NULL = 0`` where the server enables it) still runs on every
checkout, as Django runs it on every connect, so each wrapper's own
``isolation_level`` holds even though the wrappers of an alias share
connections; a checkout costs that one statement instead of a TCP and
authentication handshake. Pooled connections rest in autocommit mode.
Other session state a request leaves behind (user variables, temporary
tables, ``SET SESSION`` variables, named locks) stays with the connection;
a transaction left open is rolled back on return.
"""

from __future__ import annotations

from typing import Any

from django.db.backends.mysql import (  # type: ignore[import-untyped,unused-ignore]
    base as mysql_base,
)
from django.db.backends.mysql import (  # type: ignore[import-untyped,unused-ignore]
    features as mysql_features,
)

from poolkeeper.django._pooled import (
    DjangoPool,
    PooledDatabaseFeatures,
    PooledDatabaseWrapper,
    PoolHooks,
)

__all__ = ["DatabaseWrapper", "DjangoPool"]


def _ping(conn: Any) -> None:
    # mysql_ping; mysqlclient's reconnect stays off, so a dead session raises.
    conn.ping()


class DatabaseFeatures(PooledDatabaseFeatures, mysql_features.DatabaseFeatures):  # type: ignore[misc,unused-ignore]
    """Django's MySQL features, with Django's test skips for pooled backends."""


class DatabaseWrapper(PooledDatabaseWrapper, mysql_base.DatabaseWrapper):  # type: ignore[misc,unused-ignore]
    """Django's MySQL ``DatabaseWrapper`` drawing connections from poolkeeper."""

    features_class = DatabaseFeatures

    def get_connection_params(self) -> dict[str, Any]:
        """Django's ``MySQLdb.connect`` arguments, without ``OPTIONS["pool"]``."""
        params: dict[str, Any] = super().get_connection_params()
        params.pop("pool", None)
        return params

    def _poolkeeper_hooks(self, connect_kwargs: dict[str, Any]) -> PoolHooks:
        # Pooled connections rest in autocommit mode (Django's default), so
        # the mode Django sets after each checkout is usually already there.
        connect_kwargs.setdefault("autocommit", True)
        stock = mysql_base.DatabaseWrapper.get_new_connection

        def connect() -> Any:
            # Django's own connect (MySQLdb.connect plus its encoder fix).
            return stock(self, connect_kwargs)

        return PoolHooks(connect, configure=None, check=_ping)
