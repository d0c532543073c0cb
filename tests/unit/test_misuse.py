"""A new user's first mistakes get an error that names the fix."""

from __future__ import annotations

from typing import Any

import pytest

from poolkeeper import AsyncPool, Pool


def connect() -> object:
    raise AssertionError("never called: construction must not connect")


async def aconnect() -> object:
    raise AssertionError("never called: construction must not connect")


POOLS = [
    pytest.param(Pool, connect, id="Pool"),
    pytest.param(AsyncPool, aconnect, id="AsyncPool"),
]


@pytest.mark.parametrize(("cls", "fn"), POOLS)
@pytest.mark.parametrize(
    ("option", "hint"),
    [
        ("max_szie", "did you mean 'max_size'?"),
        ("min_sise", "did you mean 'min_size'?"),
        ("timout", "did you mean 'timeout'?"),
        ("max_lifetme", "did you mean 'max_lifetime'?"),
        ("pool_size", "use min_size and max_size"),
        ("max_overflow", "use max_size"),
        ("pool_timeout", "use timeout"),
        ("pool_recycle", "use max_lifetime"),
        ("pool_pre_ping", "use validate"),
        ("minsize", "use min_size"),
        ("max_inactive_connection_lifetime", "use max_idle"),
        ("zzzz", "'zzzz': not an option"),
    ],
)
def test_unknown_option_names_the_right_one(
    cls: Any, fn: Any, option: str, hint: str
) -> None:
    with pytest.raises(TypeError) as info:
        cls(fn, **{option: 5})
    message = str(info.value)
    assert f"{cls.__name__}() got unexpected keyword argument: " in message
    assert f"{option!r}: " in message
    assert hint in message
    assert "max_size" in message  # the list of options


def test_several_unknown_options_are_all_named() -> None:
    with pytest.raises(TypeError) as info:
        Pool(connect, pool_size=5, max_overflow=10, max_szie=3)  # type: ignore[call-overload]
    message = str(info.value)
    assert "arguments: 'max_overflow': use max_size" in message
    assert "'max_szie': did you mean 'max_size'?" in message
    assert "'pool_size': use min_size and max_size" in message


def test_with_on_an_async_pool_says_async_with() -> None:
    pool = AsyncPool(aconnect)
    with (
        pytest.raises(TypeError, match=r"write 'async with pool', not 'with pool'"),
        pool,
    ):
        pytest.fail("entered")
    with (
        pytest.raises(TypeError, match=r"connection\(\) is asynchronous: write 'async"),
        pool.connection(),
    ):
        pytest.fail("entered")
    with (
        pytest.raises(
            TypeError,
            match=r"AsyncPool\.acquire\(\) is asynchronous: write "
            r"'async with pool\.acquire\(\) as conn'",
        ),
        pool.acquire(),
    ):
        pytest.fail("entered")
    # Nothing was started: the pool can still be closed as usual.
    assert pool.stats().size == 0
