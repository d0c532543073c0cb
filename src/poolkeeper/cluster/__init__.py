"""PostgreSQL clusters: where a connection went, and read/write routing."""

from poolkeeper.drivers._hosts import HostInfo, Role, host_of

__all__ = ["HostInfo", "Role", "host_of"]
