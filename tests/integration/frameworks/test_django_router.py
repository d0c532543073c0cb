"""Django ``DATABASE_ROUTERS`` with the poolkeeper backend on a real primary + replica.

The docs/CLUSTERS.md recipe, end to end: both aliases name both servers;
libpq's ``target_session_attrs`` puts ``default`` on the primary and
``replica`` on the streaming replica, and the router sends ORM reads to one
and writes to the other. Runs in a subprocess (``django_router_app.py``):
Django's settings are configured once per process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import import_driver
from tests.support.replication import ReplicaSet, replica_set

pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def rs() -> Iterator[ReplicaSet]:
    with replica_set(1) as started:
        yield started


def test_router_sends_reads_to_the_replica_and_writes_to_the_primary(
    pytestconfig: pytest.Config, rs: ReplicaSet
) -> None:
    import_driver(pytestconfig, "django")
    import_driver(pytestconfig, "psycopg")
    primary, replica = rs.primary.port, rs.replicas[0].port
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.integration.frameworks.django_router_app",
            str(primary),
            str(replica),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    # Each alias reached the server its target_session_attrs asks for.
    assert result["default"] == [primary, False]
    assert result["replica"] == [replica, True]
    # The ORM write ran on default only; the reads on replica only, and the
    # row written through the primary was read back from the replica.
    assert result["write_queries"]["default"] >= 1
    assert result["write_queries"]["replica"] == 0
    assert result["read_queries"]["replica"] >= 2
    assert result["read_queries"]["default"] == 0
    assert result["text"] == "routed"
    # Each alias borrowed from its own poolkeeper pool.
    assert result["distinct_pools"] is True
    assert all(name.startswith("poolkeeper.") for name in result["pools"].values())
