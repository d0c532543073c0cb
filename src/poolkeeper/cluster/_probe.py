"""What a cluster object asks its members and Patroni, and how it builds member URLs.

The probe is one query through the member's own pool: whether the server is
in recovery, whether it is read-only by default, and its replay lag in
seconds. Lag is 0 when the replica has replayed everything it received (an
idle primary writes no transactions, so "time since the last replayed
commit" alone would grow forever on a replica that is perfectly current),
else the age of the last replayed commit.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, urlencode

from poolkeeper._config import parse_url
from poolkeeper.cluster._routing import Observation
from poolkeeper.drivers._hosts import HostPort, host_target, role_from
from poolkeeper.errors import ConfigError

PROBE_QUERY = (
    "SELECT pg_catalog.pg_is_in_recovery()::text,"
    " pg_catalog.current_setting('default_transaction_read_only'),"
    " CASE WHEN NOT pg_catalog.pg_is_in_recovery()"
    " OR pg_catalog.pg_last_wal_receive_lsn() = pg_catalog.pg_last_wal_replay_lsn()"
    " THEN 0 ELSE extract(epoch FROM now() - coalesce("
    "pg_catalog.pg_last_xact_replay_timestamp(),"
    " pg_catalog.pg_postmaster_start_time()))::float8 END"
)

#: Multi-host parameters that make no sense on one member's own URL.
_CLUSTER_KEYS = ("target_session_attrs", "load_balance_hosts", "host", "port")


def members_of(url: str) -> list[HostPort]:
    """Return the hosts a cluster URL names (validated as for a pool).

    Raises:
        ConfigError: the URL is not PostgreSQL, or a multi-host value is bad.
    """
    parsed = parse_url(url)
    if parsed.dialect not in ("postgresql", "postgres"):
        raise ConfigError(
            f"a cluster needs a postgresql:// URL, got {parsed.redacted()!r}"
        )
    return list(host_target(parsed, {}, timeout_keys=()).hosts)


def member_url(url: str, host: str | None, port: int | None) -> str:
    """Return ``url`` narrowed to one member (no host list, no role wanted)."""
    parsed = parse_url(url)
    auth = ""
    if parsed.username is not None:
        auth = quote(parsed.username, safe="")
        if parsed.password is not None:
            auth += ":" + quote(parsed.password, safe="")
        auth += "@"
    where = ""
    if host is not None:
        where = f"[{host}]" if ":" in host else quote(host, safe="")
    if port is not None:
        where += f":{port}"
    query = {k: v for k, v in parsed.query.items() if k not in _CLUSTER_KEYS}
    db = "/" + quote(parsed.database, safe="") if parsed.database is not None else "/"
    return f"{parsed.scheme}://{auth}{where}{db}" + (
        f"?{urlencode(query)}" if query else ""
    )


def observation(
    hostport: HostPort, row: Sequence[Any], name: str | None = None
) -> Observation:
    """Turn a :data:`PROBE_QUERY` row into an :class:`Observation`."""
    in_recovery, read_only, lag = row[0], row[1], row[2]
    return Observation(
        hostport[0],
        hostport[1],
        role_from(in_recovery, read_only),
        float(lag) if lag is not None else None,
        True,
        name,
    )


def unreachable(hostport: HostPort, name: str | None = None) -> Observation:
    """The observation of a member that could not be probed."""
    return Observation(hostport[0], hostport[1], "unknown", None, False, name)


def probe_sync(conn: Any) -> Sequence[Any]:
    """Run :data:`PROBE_QUERY` on a DB-API connection (psycopg, psycopg2)."""
    cursor = conn.cursor()
    try:
        cursor.execute(PROBE_QUERY)
        row: Sequence[Any] = cursor.fetchone()
        return row
    finally:
        cursor.close()


async def probe_async(conn: Any) -> Sequence[Any]:
    """Run :data:`PROBE_QUERY` on an asyncpg, psycopg or aiopg connection."""
    root = type(conn).__module__.partition(".")[0]
    if root == "asyncpg":
        return tuple(await conn.fetchrow(PROBE_QUERY))
    if root == "psycopg":
        cursor = await conn.execute(PROBE_QUERY)
        return tuple(await cursor.fetchone())
    cursor = await conn.cursor()  # aiopg
    try:
        await cursor.execute(PROBE_QUERY)
        return tuple(await cursor.fetchone())
    finally:
        cursor.close()


#: Patroni roles of a member that is, or is about to be, a writable primary.
_LEADER_ROLES = frozenset({"leader", "master", "primary"})


def patroni_members(endpoints: Sequence[str], timeout: float) -> list[dict[str, Any]]:
    """``GET /cluster`` from the first Patroni REST endpoint that answers.

    Returns:
        Its ``members`` list.

    Raises:
        OSError: no endpoint answered with a member list.
    """
    last: Exception | None = None
    for base in endpoints:
        try:
            with urllib.request.urlopen(
                base.rstrip("/") + "/cluster", timeout=timeout
            ) as response:
                members = json.load(response)["members"]
            if isinstance(members, list):
                return members
        except (OSError, ValueError, KeyError) as exc:
            last = exc
    raise OSError(f"no Patroni REST endpoint answered GET /cluster: {last}")


def patroni_leader(members: Sequence[dict[str, Any]]) -> HostPort | None:
    """Return the running leader's ``(host, port)``, if Patroni names one."""
    for member in members:
        if member.get("role") in _LEADER_ROLES and member.get("state") == "running":
            return str(member["host"]), int(member["port"])
    return None


def patroni_hostports(
    members: Sequence[dict[str, Any]],
) -> list[tuple[HostPort, str | None]]:
    """Return every member's ``(host, port)`` and name."""
    return [
        ((str(m["host"]), int(m["port"])), m.get("name"))
        for m in members
        if "host" in m and "port" in m
    ]
