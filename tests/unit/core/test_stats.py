"""The time summaries behind ``PoolStats``: exact totals, recent quantiles."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from poolkeeper._core.stats import Summary


@pytest.mark.parametrize("n", [0, 1, 5, 1023, 1024, 1025, 3000, 4096])
def test_summary_totals_are_exact_across_ring_laps(n: int) -> None:
    rng = random.Random(n)
    values = [rng.random() for _ in range(n)]
    summary = Summary()
    for value in values:
        summary.add(value)
    copied, snapshot = summary.copy(), summary.snapshot()
    assert summary.count == copied.count == snapshot.count == n
    for total in (summary.total, copied.total, snapshot.total):
        assert total == pytest.approx(sum(values))
    assert summary.max == copied.max == snapshot.max == max(values, default=0.0)
    assert sorted(copied.samples) == sorted(values[-1024:])


def test_quantiles_come_from_the_recent_samples() -> None:
    summary = Summary()
    for _ in range(2000):
        summary.add(10.0)  # an old slow period, pushed out of the ring
    for i in range(1, 1025):
        summary.add(i / 1000)
    snapshot = summary.snapshot()
    assert snapshot.max == 10.0 and snapshot.count == 3024
    assert snapshot.p50 == 0.512 and snapshot.p99 == 1.014
    assert snapshot.mean == pytest.approx((20000 + 1024 * 1025 / 2000) / 3024)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.integers(0, 3000), st.floats(0.001, 5.0)), max_size=12))
def test_pending_zeros_read_as_samples_added_in_order(steps: list[float]) -> None:
    """The hot path counts zero waits (``zeros += 1``) instead of adding 0.0
    samples: read back, the summary is the one adding them would have made.
    An int step is that many zeros; a float step is one sample."""
    lazy, eager = Summary(), Summary()
    for step in steps:
        if isinstance(step, int):
            lazy.zeros += step
            for _ in range(step):
                eager.add(0.0)
        else:
            lazy.add(step)
            eager.add(step)
    assert lazy.mean == eager.mean
    assert lazy.snapshot() == eager.snapshot()
    assert (lazy.count, lazy.zeros) == (eager.count, 0)
