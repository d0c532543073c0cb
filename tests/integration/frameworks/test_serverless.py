"""Cold starts, warm invocations and freezes of a Lambda-style handler.

``examples/lambda_handler.py`` is imported afresh for each simulated
execution environment (a cold start) and its ``handler`` called like Lambda
calls it. A freeze is a real pause longer than ``DB_VALIDATE_AFTER`` during
which the server drops the idle connection (``pg_terminate_backend``), as a
database or NAT idle timeout would while the environment sleeps.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

import poolkeeper
from poolkeeper.serverless import ServerlessPool
from tests.integration.frameworks.conftest import backends, terminate
from tests.integration.frameworks.examples import load_example

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

FREEZE_AFTER = 0.3


@pytest.fixture
def environment(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, list[ModuleType]]]:
    """Lambda-style environment variables; closes every environment's pool after."""
    app = f"pk-lambda-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("DATABASE_URL", postgres_url)
    monkeypatch.setenv("DB_APPLICATION_NAME", app)
    monkeypatch.setenv("DB_VALIDATE_AFTER", str(FREEZE_AFTER))
    loaded: list[ModuleType] = []
    yield app, loaded
    for module in loaded:
        module.db.close()


def cold_start(loaded: list[ModuleType]) -> ModuleType:
    module = load_example("lambda_handler")
    loaded.append(module)
    return module


def test_cold_warm_and_frozen_invocations(
    environment: tuple[str, list[ModuleType]], admin: Any
) -> None:
    app, loaded = environment
    env = cold_start(loaded)
    assert env.db.stats().cold_starts == 0  # importing opened nothing
    assert backends(admin, app) == 0

    first = env.handler({"name": "cold"}, None)
    assert first["body"] == "hello cold"
    second = env.handler({"name": "warm"}, None)
    # The warm invocation reused the connection of the cold one.
    assert second["backend_pid"] == first["backend_pid"]
    stats = env.db.stats()
    assert (stats.invocations, stats.cold_starts, stats.thaws) == (2, 1, 0)
    assert env.db.pool.stats().connections_created == 1

    # Freeze: the environment sleeps, the server drops the idle connection.
    assert terminate(admin, app) == 1
    time.sleep(FREEZE_AFTER + 0.1)
    thawed = env.handler({"name": "thawed"}, None)
    assert thawed["body"] == "hello thawed"  # no error reached the handler
    assert thawed["backend_pid"] != first["backend_pid"]
    stats = env.db.stats()
    assert stats.thaws == 1
    assert stats.last_gap is not None and stats.last_gap >= FREEZE_AFTER
    assert env.db.pool.stats().size <= 1  # the tiny default

    # A second execution environment is a second cold start with its own pool.
    other = cold_start(loaded)
    assert other.handler({}, None)["body"] == "hello world"
    assert other.db.stats().cold_starts == 1
    assert other.db.pool is not env.db.pool


def test_null_pool_mode_keeps_nothing_between_invocations(
    environment: tuple[str, list[ModuleType]],
    admin: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app, loaded = environment
    monkeypatch.setenv("DB_BEHIND_PROXY", "1")
    env = cold_start(loaded)
    pids = set()
    for i in range(3):
        pids.add(env.handler({"name": str(i)}, None)["backend_pid"])
        deadline = time.monotonic() + 5
        while backends(admin, app) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert backends(admin, app) == 0  # closed after the invocation
    assert len(pids) == 3
    assert env.db.pool.stats().connections_created == 3


def test_manual_clock_and_argument_checks(postgres_url: str) -> None:
    now = [100.0]
    db = ServerlessPool(postgres_url, validate_after=60.0, clock=lambda: now[0])
    try:
        with db.connection() as conn:
            conn.execute("SELECT 1")
        now[0] += 59.0
        with db.connection():
            pass
        assert db.stats().thaws == 0
        now[0] += 61.0
        with db.connection():
            pass
        assert db.stats().thaws == 1
        assert db.stats().last_gap == pytest.approx(61.0)
    finally:
        db.close()
    with pytest.raises(poolkeeper.ConfigError, match="validate_after"):
        ServerlessPool(postgres_url, validate_after=-1)
