"""A connect cancelled in flight leaves nothing behind, on every asyncio driver.

``close()`` cancels the connects still in progress once its ``timeout`` has
passed (and a caller's cancellation does the same to a connect it runs
itself). A connection the driver had already opened, still in the pool's
hands (the ``configure`` hook runs), must be closed then: no
``ResourceWarning`` when the garbage collector finds it, and no session left
on the server (``pg_stat_activity``, MariaDB's process list).

Thread pools are not here: a connect thread is never interrupted.
"""

from __future__ import annotations

import asyncio
import gc
import warnings
from typing import Any

import pytest

from tests.integration import test_pool_drivers
from tests.integration.test_pool_drivers import Target, _make_pool
from tests.support.waiting import asettle

#: The per-driver fixture (one connection URL per driver, cleaned up after).
target = test_pool_drivers.target

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


def _collect_resource_warnings() -> list[str]:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", ResourceWarning)
        gc.collect()
    return [str(w.message) for w in seen if issubclass(w.category, ResourceWarning)]


async def test_close_during_the_configure_hook_closes_the_new_connection(
    target: Target,
) -> None:
    if not target.case.is_async:
        pytest.skip("threads: a connect in progress is not interrupted")
    gc.collect()  # nothing of an earlier test is counted here
    started = asyncio.Event()

    async def configure(conn: Any) -> None:
        started.set()
        await asyncio.sleep(60)

    pool = _make_pool(target, min_size=1, max_size=1, configure=configure)
    await pool.open()
    await asyncio.wait_for(started.wait(), 10)
    if target.sessions() is not None:
        assert target.sessions() == 1  # the connection the hook holds
    await pool.close(timeout=0)
    assert pool.stats().connecting == 0
    del configure
    assert _collect_resource_warnings() == []
    if target.sessions() is not None:
        assert await asettle(lambda: target.sessions() == 0, within=5.0)
