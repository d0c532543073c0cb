"""Which build runs (compiled or pure), POOLKEEPER_PURE, and what the
compiled build must keep doing like the pure one (weak references to pools).

scripts/test runs this file on both builds (scripts/test-compiled)."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import weakref
from typing import Any

import poolkeeper
from poolkeeper.cli.bench import build


def test_build_is_reported_the_same_everywhere() -> None:
    assert poolkeeper.BUILD in ("compiled", "pure")
    assert build() == poolkeeper.BUILD
    state = sys.modules["poolkeeper._core.state"]
    assert state.__file__ is not None
    assert state.__file__.endswith(".py") == (poolkeeper.BUILD == "pure")


def test_pure_env_loads_every_module_from_source() -> None:
    code = textwrap.dedent(
        """
        import sys
        import poolkeeper
        from poolkeeper.cli.bench import build
        mods = {n: m.__file__ for n, m in sys.modules.items()
                if n.startswith("poolkeeper") and getattr(m, "__file__", None)}
        not_source = sorted(n for n, f in mods.items() if not f.endswith(".py"))
        assert not not_source, not_source
        assert "poolkeeper._sync.checkout" in mods
        with poolkeeper.Pool("sqlite://", min_size=1, max_size=1) as pool:
            with pool.connection() as conn:
                assert conn.execute("SELECT 2").fetchone() == (2,)
        print(poolkeeper.BUILD, build())
        """
    )
    env = dict(os.environ, POOLKEEPER_PURE="1")
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["pure", "pure"]


def test_a_weak_reference_to_a_pool_dies_with_it() -> None:
    # The compiled build's pool classes keep their weak references where
    # mypyc 2.4 freed one too many on Python < 3.12 (hatch_build.py patches
    # its output): this crashed the interpreter at the next collection.
    pools: weakref.WeakSet[poolkeeper.Pool[Any]] = weakref.WeakSet()
    refs = []
    for _ in range(3):
        pool = poolkeeper.Pool("sqlite://", min_size=1, max_size=1)
        with pool, pool.connection():
            pass
        pools.add(pool)
        refs.append(weakref.ref(pool))
        del pool
    gc.collect()
    assert [ref() for ref in refs] == [None, None, None]
    assert len(pools) == 0
