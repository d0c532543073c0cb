"""What a session reset on return costs on asyncpg: one round trip or two.

Times, on one asyncpg connection to the local PostgreSQL, 500 returns' worth
of each way to reset a session, 5 interleaved rounds, median:

* asyncpg's ``Connection.reset()`` (what asyncpg's pool runs on release: one
  message with advisory-unlock, ``CLOSE ALL``, ``UNLISTEN *``, ``RESET ALL``);
* poolkeeper's ``reset="full"`` on asyncpg (``AsyncpgDriver.reset_session``:
  asyncpg's client-side reset, then asyncpg's reset query and the statements
  discarding plans, temporary objects, sequences and the session
  authorization, in one message);
* the statements of both in one message sent with a bare ``execute()``: the
  floor of a one-round-trip full reset.

Example::

    python benchmarks/reset_cost.py --dsn postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence

import asyncpg

from poolkeeper.drivers.asyncpg import _RESET_SQL, AsyncpgDriver


async def measure(dsn: str, n: int, rounds: int) -> dict[str, float]:
    conn = await asyncpg.connect(dsn)
    try:
        combined = conn.get_reset_query().rstrip().rstrip(";") + ";\n" + _RESET_SQL

        async def one_message() -> None:
            await conn.execute(combined)

        ways: dict[str, Callable[[], Awaitable[None]]] = {
            "asyncpg Connection.reset()": conn.reset,
            "poolkeeper reset='full'": lambda: AsyncpgDriver.reset_session(
                None,  # type: ignore[arg-type]  # the method uses no adapter state
                conn,
            ),
            "both in one message": one_message,
        }
        times: dict[str, list[float]] = {k: [] for k in ways}
        for _ in range(rounds):
            for name, way in ways.items():
                start = time.perf_counter()
                for _ in range(n):
                    await way()
                times[name].append((time.perf_counter() - start) / n * 1e6)
    finally:
        await conn.close()
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else ""
    )
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("-n", type=int, default=500, help="resets per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    result = asyncio.run(measure(args.dsn, args.n, args.rounds))
    base = result["asyncpg Connection.reset()"]
    print(
        f"| reset on return (asyncpg, median of {args.rounds} x {args.n}) | us | vs asyncpg |"
    )
    print("|---|---|---|")
    for name, us in result.items():
        print(f"| {name} | {us:.1f} | {us / base:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
