"""Reconnect pacing: how soon callers get the server back after an outage, and
what the pool costs the server meanwhile (issue 20, item 3).

For each PostgreSQL driver (sync ``Pool`` and ``AsyncPool``) and each outage
length, a warm pool (``min_size=1, max_size=4, timeout=1``) loses its server
while two callers (threads or tasks) keep asking for a connection and running
``SELECT 1``. The outage is either a fault proxy that resets every connection
(``proxy``) or a private PostgreSQL 15 cluster stopped with ``-m immediate``
and started again (``restart``: refused, then 57P03 "starting up"). The
server comes back right after one of the pool's failed attempts (the worst
case for pacing: the whole retry interval is still ahead), see
``tests/support/outage.py``.

Columns: ``down`` seconds the server was away; ``att/s`` the pool's failed
connect attempts per second while callers waited; ``try ms`` from the
server accepting again to the start of the connect that succeeded (the
pacing; the rest is the connect, slow on a loaded machine); ``first ms`` from the
server accepting again (proxy back to pass; for a restart the first moment a
probe connecting every 5 ms got in) to the first successful checkout;
``timeouts`` ``PoolTimeout`` raised to callers and the longest wait before
one; ``errors`` any other exception a caller saw.

``--compare`` runs each case a second time with ``reconnect_fast_interval=None``
(plain exponential backoff, poolkeeper 0.1's policy), interleaved.

Examples::

    PYTHONPATH=src python benchmarks/reconnect_pacing.py
    PYTHONPATH=src python benchmarks/reconnect_pacing.py --outages 1 5 20 --compare
    PYTHONPATH=src python benchmarks/reconnect_pacing.py --drivers psycopg asyncpg --kinds restart
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.faultproxy import FaultProxy
from tests.support.outage import DRIVERS, OutageResult, run_outage
from tests.support.pgcluster import PgCluster


def _row(result: OutageResult, policy: str) -> str:
    first = (
        f"{result.first_checkout * 1000:8.1f}"
        if result.first_checkout is not None
        else "   never"
    )
    attempt = (
        f"{result.first_attempt * 1000:7.1f}"
        if result.first_attempt is not None
        else "      -"
    )
    longest = max(result.timeouts, default=0.0)
    return (
        f"{result.driver:<14} {result.kind:<8} {policy:<8} {result.outage:6.2f} "
        f"{result.rate:6.1f} {attempt} {first} {len(result.timeouts):5d} {longest:6.3f}  "
        f"{len(result.errors)} {'; '.join(sorted(set(result.errors)))[:60]}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drivers", nargs="+", default=list(DRIVERS))
    parser.add_argument("--kinds", nargs="+", default=["proxy", "restart"])
    parser.add_argument("--outages", nargs="+", type=float, default=[1.0, 5.0, 20.0])
    parser.add_argument("--compare", action="store_true")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)  # one line per failed connect otherwise
    policies: list[tuple[str, dict[str, Any]]] = [("fast", {})]
    if args.compare:
        policies.append(("backoff", {"reconnect_fast_interval": None}))
    print(
        f"{'driver':<14} {'fault':<8} {'policy':<8} {'down':>6} {'att/s':>6} "
        f"{'try ms':>7} {'first ms':>8} {'tmo':>5} {'max':>6}  errors"
    )
    with PgCluster() as cluster:
        cluster.start()
        for outage in args.outages:
            for kind in args.kinds:
                for driver in args.drivers:
                    for policy, extra in policies:
                        if kind == "proxy":
                            with FaultProxy((cluster.host, cluster.port)) as proxy:
                                result = run_outage(
                                    driver, kind, outage, cluster, proxy, **extra
                                )
                        else:
                            try:
                                result = run_outage(
                                    driver, kind, outage, cluster, **extra
                                )
                            finally:
                                cluster.start()
                        print(_row(result, policy), flush=True)


if __name__ == "__main__":
    main()
