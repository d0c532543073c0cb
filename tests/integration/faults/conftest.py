"""Fault tests use a private PostgreSQL cluster and a fault proxy in front of it."""

from tests.support.fixtures import fault_proxy, pg_cluster

__all__ = ["fault_proxy", "pg_cluster"]
