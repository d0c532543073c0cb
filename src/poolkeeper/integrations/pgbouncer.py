"""Deprecated alias: the PgBouncer preset lives in :mod:`poolkeeper.presets`.

``transaction_mode_options`` is :func:`poolkeeper.presets.pgbouncer_transaction`;
see :mod:`poolkeeper.presets` for why transaction mode needs it.
"""

from __future__ import annotations

from poolkeeper.presets import DRIVER_CONNECT_ARGS, driver_name
from poolkeeper.presets import pgbouncer_transaction as transaction_mode_options

__all__ = ["DRIVER_CONNECT_ARGS", "driver_name", "transaction_mode_options"]
