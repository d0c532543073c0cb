"""Pytest fixtures for fault-injection tests: a private PostgreSQL and a fault proxy.

Not registered anywhere on purpose. A conftest (or a test module) opts in with::

    from tests.support.fixtures import fault_proxy, pg_cluster  # noqa: F401

or ``pytest_plugins = ["tests.support.fixtures"]`` in the root conftest.

``pg_cluster`` is shared by the whole session, so a test that stops it, freezes it
or changes a setting must undo that itself (``try``/``finally``, or
:meth:`PgCluster.reset_gucs`). ``fault_proxy`` restarts the cluster if an earlier
test left it stopped, and always starts in ``pass`` mode.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.faultproxy import FaultProxy
from tests.support.pgcluster import PgCluster, pg_available

__all__ = ["fault_proxy", "pg_cluster"]


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """A throwaway PostgreSQL 15 cluster on a free loopback port, trust auth.

    Skips when the PostgreSQL binaries (or the ``postgres`` OS user, when running
    as root) are missing. The cluster and its directory are removed at the end
    of the session.
    """
    reason = pg_available()
    if reason is not None:
        pytest.skip(f"cannot create a PostgreSQL cluster: {reason}")
    cluster = PgCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def fault_proxy(pg_cluster: PgCluster) -> Iterator[FaultProxy]:
    """A :class:`FaultProxy` in front of ``pg_cluster``; connect to ``.port``.

    Teardown closes every link, joins the proxy thread and fails the test if the
    proxy loop reported an unexpected error.
    """
    if not pg_cluster.is_running:
        pg_cluster.start()
    proxy = FaultProxy((pg_cluster.host, pg_cluster.port))
    with proxy:
        yield proxy
    assert not proxy.errors, f"fault proxy loop errors: {proxy.errors}"
