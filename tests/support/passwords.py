"""Servers that check passwords, for connect-error tests and measurements.

The machine's PostgreSQL trusts 127.0.0.1, so a wrong password would go
unnoticed there: :func:`require_password` makes a private
:class:`~tests.support.pgcluster.PgCluster` ask one role for its password
(``scram-sha-256``). :func:`mysql_admin` opens the administrative MariaDB
session that creates users with a password.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import unquote, urlsplit

from tests.support.pgcluster import PgCluster

__all__ = ["mysql_admin", "require_password"]


def require_password(cluster: PgCluster, role: str, password: str) -> None:
    """Create ``role`` on ``cluster`` and make TCP logins as it use scram-sha-256.

    Other roles keep trust authentication. Returns once the server checks
    the password (the reload is asynchronous).

    Raises:
        AssertionError: the new ``pg_hba.conf`` did not take effect in 10 s.
    """
    import psycopg
    from psycopg import sql

    # Rewritten in place, so the file keeps its owner (postgres).
    with (cluster.datadir / "pg_hba.conf").open("w") as hba:
        hba.write(
            "local all all trust\n"
            f"host all {role} 127.0.0.1/32 scram-sha-256\n"
            "host all all 127.0.0.1/32 trust\n"
        )
    with psycopg.connect(
        host=str(cluster.socket_dir),
        port=cluster.port,
        user="postgres",
        dbname="postgres",
        autocommit=True,
    ) as admin:
        admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )
        admin.execute("SELECT pg_reload_conf()")
    deadline = time.monotonic() + 10.0
    while True:
        try:
            psycopg.connect(cluster.url(user=role, dbname="postgres")).close()
        except psycopg.OperationalError as exc:
            if "password" in str(exc):
                return
        if time.monotonic() > deadline:
            raise AssertionError("pg_hba.conf reload did not take effect")
        time.sleep(0.05)


def mysql_admin(url: str) -> Any:
    """Open an autocommit PyMySQL session with the credentials of ``url``."""
    import pymysql

    parts = urlsplit(url)
    return pymysql.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=unquote(parts.username or "root"),
        password=unquote(parts.password or ""),
        autocommit=True,
    )
