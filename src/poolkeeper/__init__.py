"""poolkeeper: a fast, reliable, observable database connection pool.

:class:`Pool` serves threads, :class:`AsyncPool` serves asyncio tasks; both
share one core, take a database URL or a connect callable, and hand out the
driver's own connection objects.
"""

from poolkeeper._async.persistent import AsyncPersistentPool
from poolkeeper._async.pool import AsyncPool
from poolkeeper._core.events import EVENT_KINDS, PoolEvent
from poolkeeper._core.stats import PoolStats, TimeSummary
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

__all__ = [
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
    "PoolStats",
    "PoolTimeout",
    "PoolWarning",
    "QueryTimeout",
    "TimeSummary",
    "TooManyWaiters",
    "__version__",
]
