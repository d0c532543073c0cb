"""Turn a pool's ``connect`` argument (URL or callable) into a driver adapter."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from poolkeeper.drivers.base import AsyncDriver, Driver, can_abort
from poolkeeper.errors import ConfigError

if TYPE_CHECKING:
    from poolkeeper._credentials import Secrets

#: Adapter names whose ping is a guess (generic DB-API): "auto" validation
#: does not ping them. "callable" is decided after the first connection.
GENERIC_DRIVERS = frozenset({"dbapi"})


def driver_for(
    connect: Any,
    connect_args: dict[str, Any],
    *,
    is_async: bool,
    secrets: Secrets | None = None,
) -> Any:
    """Return the adapter for a URL or a connect callable.

    ``secrets`` collects the values credential providers in ``connect_args``
    return, so that the pool can mask them (see :mod:`poolkeeper._credentials`).

    Raises:
        ConfigError: ``connect`` is neither, the URL is unsupported, or
            ``connect_args`` was given with a callable.
    """
    from poolkeeper.drivers import driver_for_url

    if isinstance(connect, str):
        return driver_for_url(connect, connect_args, is_async=is_async, secrets=secrets)
    if not callable(connect):
        raise ConfigError(
            f"connect must be a database URL string or a callable, got "
            f"{type(connect).__name__}"
        )
    if connect_args:
        raise ConfigError(
            "connect_args only applies to a URL; pass arguments inside your "
            "connect callable"
        )
    if is_async:
        from poolkeeper.drivers.dbapi import AsyncCallableDriver

        return AsyncCallableDriver(connect)
    from poolkeeper.drivers.dbapi import CallableDriver

    return CallableDriver(connect)


def adapter_shortfalls(driver: Driver | AsyncDriver, query_timeout: bool) -> list[str]:
    """Say which asked-for options the driver cannot fully honour on its connections.

    For a URL these are refused at construction; a callable's adapter is only
    known after its first connection, when the pool calls this once and warns
    about each (see ``AsyncPool._check_adapter``).
    """
    shortfalls = []
    if query_timeout and not can_abort(driver):
        shortfalls.append(
            f"query_timeout cannot cut a stuck command short: the {driver.name} "
            "adapter cannot abort one on these connections; a connection held "
            "past query_timeout is only discarded when it comes back"
        )
    return shortfalls
