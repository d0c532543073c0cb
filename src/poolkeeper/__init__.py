"""poolkeeper: a fast, reliable, observable database connection pool.

:class:`Pool` serves threads, :class:`AsyncPool` serves asyncio tasks; both
share one core, take a database URL or a connect callable, and hand out the
driver's own connection objects.
"""

# isort: off
# First: with POOLKEEPER_PURE=1 it makes the modules below load from source.
from poolkeeper import _build

# isort: on
import sys

from poolkeeper._async.persistent import AsyncPersistentPool
from poolkeeper._async.pool import AsyncPool
from poolkeeper._core.events import EVENT_KINDS, PoolEvent
from poolkeeper._core.stats import PoolStats, TimeSummary
from poolkeeper._options import PoolOptions
from poolkeeper._sync.persistent import PersistentPool
from poolkeeper._sync.pool import Pool
from poolkeeper.cluster import AsyncCluster, Cluster
from poolkeeper.errors import (
    ConfigError,
    ConnectionLeakWarning,
    PoolClosed,
    PoolError,
    PoolTimeout,
    PoolWarning,
    QueryTimeout,
    TooManyWaiters,
)

__version__ = "0.1.0"

#: Which build of poolkeeper's core was imported: ``"compiled"`` (mypyc
#: extension modules, from a compiled wheel) or ``"pure"`` (Python source; with
#: ``POOLKEEPER_PURE=1`` even where compiled modules are installed).
BUILD = _build.build_of(sys.modules["poolkeeper._core.state"])

__all__ = [
    "BUILD",
    "EVENT_KINDS",
    "AsyncCluster",
    "AsyncPersistentPool",
    "AsyncPool",
    "Cluster",
    "ConfigError",
    "ConnectionLeakWarning",
    "PersistentPool",
    "Pool",
    "PoolClosed",
    "PoolError",
    "PoolEvent",
    "PoolOptions",
    "PoolStats",
    "PoolTimeout",
    "PoolWarning",
    "QueryTimeout",
    "TimeSummary",
    "TooManyWaiters",
    "__version__",
]
