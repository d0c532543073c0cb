"""The shared driver contract suite, run through PgBouncer in transaction mode.

The psycopg 3 and asyncpg cases of ``tests/integration/test_driver_contract.py``
run with their adapters built from the PgBouncer URL and the
:func:`poolkeeper.presets.pgbouncer_transaction` connect arguments; the
side ("admin") connection still goes straight to PostgreSQL. Two contract
tests assume a server session per connection and do not apply behind a
transaction-mode pooler, so they are left out here:
``test_broken_after_server_side_kill`` (killing the server backend does not
break the client's PgBouncer connection: PgBouncer just drops that server
connection) and ``test_reset_session_clears_state`` (there is no session to
reset; that is the point of the preset).
"""

from __future__ import annotations

from typing import Any

import pytest

from poolkeeper import presets
from poolkeeper.drivers import driver_for_url
from tests.conftest import import_driver
from tests.integration import test_driver_contract as contract
from tests.integration.test_driver_contract import (
    Case,
    admin,
    anyio_backend,
    base_url,
    conn,
    table,
    test_close_is_idempotent,
    test_commit_persists,
    test_connect_ping_and_idle_state,
    test_connection_module_maps_back_to_adapter,
    test_keepalive_default_applied,
    test_ping_raises_on_closed_connection,
    test_rollback_discards,
    test_through_the_pool_commit_on_exit,
    test_transaction_status_transitions,
)
from tests.support.pgbouncer import PgBouncer

__all__ = [
    "admin",
    "anyio_backend",
    "base_url",
    "conn",
    "table",
    "test_close_is_idempotent",
    "test_commit_persists",
    "test_connect_ping_and_idle_state",
    "test_connection_module_maps_back_to_adapter",
    "test_keepalive_default_applied",
    "test_ping_raises_on_closed_connection",
    "test_rollback_discards",
    "test_through_the_pool_commit_on_exit",
    "test_transaction_status_transitions",
]

pytestmark = [pytest.mark.anyio]

CASES = [c for c in contract.CASES if c.id in ("psycopg", "asyncpg")]


@pytest.fixture(params=CASES, ids=[c.id for c in CASES])
def case(request: pytest.FixtureRequest) -> Case:
    c: Case = request.param
    import_driver(request.config, c.package)
    return c


@pytest.fixture
def url(case: Case, pgbouncer: PgBouncer) -> str:
    return f"{case.scheme}://{pgbouncer.url.partition('://')[2]}"


@pytest.fixture
def driver(case: Case, url: str) -> Any:
    options = presets.pgbouncer_transaction(case.scheme + "://")
    return driver_for_url(url, options["connect_args"], is_async=case.is_async)
