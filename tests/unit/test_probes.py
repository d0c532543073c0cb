"""The idle probes run on every return: compiled with the core in the compiled build.

scripts/test runs this file on both builds (scripts/test-compiled).
"""

from __future__ import annotations

import types

import poolkeeper
from poolkeeper.drivers import _libpq, _probes
from poolkeeper.drivers.psycopg import PsycopgDriver
from poolkeeper.drivers.psycopg2 import Psycopg2Driver


def test_the_probes_idle_code_is_libpqs() -> None:
    # _probes keeps PQTRANS_IDLE as a literal (mypyc inlines it).
    assert _probes._PQ_IDLE == _libpq.PQ_IDLE


def test_the_sync_postgres_adapters_probe_with_the_shared_functions() -> None:
    assert Psycopg2Driver.is_idle is _probes.psycopg2_idle
    assert PsycopgDriver.is_idle is _probes.psycopg_idle


def test_the_probes_are_native_functions_in_the_compiled_build() -> None:
    # A Python function here would put an interpreted frame on every cycle.
    compiled = poolkeeper.BUILD == "compiled"
    for probe in (_probes.psycopg_idle, _probes.psycopg2_idle):
        assert isinstance(probe, types.FunctionType) is not compiled, probe
