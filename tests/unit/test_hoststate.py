"""The per-host table a pool will keep (src/poolkeeper/_hoststate.py)."""

from __future__ import annotations

from poolkeeper._hoststate import HostTable
from poolkeeper.drivers._hosts import HostInfo


def test_host_table_tracks_connections_role_and_suspicion() -> None:
    table = HostTable()
    table.connected(HostInfo("db1", 5432, "primary"))
    table.connected(HostInfo("db1", 5432, "standby"))
    table.connected(HostInfo("db2", None, "unknown"))
    db1 = table.state_of(("db1", 5432))
    assert (db1.connections, db1.role) == (2, "standby")
    table.closed(("db1", 5432))
    table.closed(("db9", 1))  # never seen: nothing to forget
    assert db1.connections == 1
    table.suspect(("db2", None), 12.5)
    assert table.state_of(("db2", None)).suspect_before == 12.5
    assert db1.suspect_before < 0
    assert sorted(table.hosts, key=str) == [("db1", 5432), ("db2", None)]
