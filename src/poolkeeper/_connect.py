"""Turn a pool's ``connect`` argument (URL or callable) into a driver adapter."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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
