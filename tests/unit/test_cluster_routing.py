"""Router decisions during a failover: Patroni's leader first, no writes to a standby."""

from __future__ import annotations

from poolkeeper.cluster._routing import Observation, Router

OLD, NEW = ("127.0.0.1", 5001), ("127.0.0.1", 5002)


def router_with_primary() -> tuple[Router, dict[tuple[str, int], object]]:
    router = Router()
    pools = {OLD: object(), NEW: object()}
    for hostport, pool in pools.items():
        router.add(hostport, pool)
    router.observe(
        [Observation(*OLD, "primary", 0.0), Observation(*NEW, "standby", 0.0)],
        complete=True,
    )
    router.take_changes()
    return router, pools


def test_patroni_leader_takes_writes_before_any_probe() -> None:
    router, pools = router_with_primary()
    router.lead(NEW)  # the probes still say NEW is a standby
    assert router.primary == NEW
    assert router.pick(readonly=False) is pools[NEW]
    assert router.primary_changes == 1
    assert router.take_changes() == [("primary_change", NEW, "primary", OLD)]


def test_no_writes_to_a_primary_found_back_as_a_standby() -> None:
    router, pools = router_with_primary()
    # The old primary comes back as a standby before any view names the new one.
    router.observe(
        [Observation(*OLD, "standby", 0.0), Observation(*NEW, "standby", 0.0)],
        complete=True,
    )
    assert router.primary == OLD
    assert router.pick(readonly=False) is None
    assert router.writable_soon()
    # Reads may still fall back to it: it serves reads.
    assert router.pick(readonly=True) in (pools[OLD], pools[NEW])
    router.observe(
        [Observation(*OLD, "standby", 0.0), Observation(*NEW, "primary", 0.0)],
        complete=True,
    )
    assert router.pick(readonly=False) is pools[NEW]


def test_a_primary_that_is_down_keeps_the_writes() -> None:
    router, pools = router_with_primary()
    router.observe(
        [
            Observation(*OLD, "unknown", None, False),
            Observation(*NEW, "standby", 0.0),
        ],
        complete=True,
    )
    # Writers see the driver's error, not a routing error, until a new primary.
    assert router.pick(readonly=False) is pools[OLD]


def test_a_cluster_that_never_had_a_primary_does_not_wait() -> None:
    router = Router()
    router.add(NEW, object())
    router.observe([Observation(*NEW, "standby", 0.0)], complete=False)
    assert router.pick(readonly=False) is None
    assert not router.writable_soon()
