"""What the presets return (no server needed; kept beside the PgBouncer tests they serve)."""

from __future__ import annotations

import pytest

import poolkeeper
from poolkeeper import presets


@pytest.mark.parametrize(
    ("driver", "connect_args"),
    [
        ("psycopg", {"prepare_threshold": None}),
        ("asyncpg", {"statement_cache_size": 0}),
        ("postgresql+asyncpg://u@h/db", {"statement_cache_size": 0}),
        ("postgresql+psycopg://u@h/db", {"prepare_threshold": None}),
        ("postgresql://u@h/db", {"prepare_threshold": None}),
        ("psycopg2", None),
        ("aiopg", None),
    ],
)
def test_pgbouncer_transaction_turns_off_prepared_statements(
    driver: str, connect_args: dict[str, object] | None
) -> None:
    options = presets.pgbouncer_transaction(driver, max_size=7)
    assert options.get("connect_args") == connect_args
    assert options["reset"] is None
    assert options["max_size"] == 7


def test_pgbouncer_transaction_keeps_user_args_and_new_pgbouncer_prepares() -> None:
    options = presets.pgbouncer_transaction(
        "psycopg", connect_args={"application_name": "x", "prepare_threshold": 3}
    )
    assert options["connect_args"] == {"application_name": "x", "prepare_threshold": 3}
    assert "connect_args" not in presets.pgbouncer_transaction(
        "asyncpg", prepared_statements=True
    )


def test_pgbouncer_transaction_refuses_other_drivers_and_reset_hooks() -> None:
    with pytest.raises(poolkeeper.ConfigError, match="PostgreSQL"):
        presets.pgbouncer_transaction("mysql+pymysql://u@h/db")
    with pytest.raises(poolkeeper.ConfigError, match="reset"):
        presets.pgbouncer_transaction("psycopg", reset=lambda conn: None)


def test_null_pool_and_serverless_presets() -> None:
    assert presets.null_pool(max_size=3) == {
        "min_size": 0,
        "max_uses": 1,
        "max_size": 3,
    }
    options = presets.serverless()
    assert (options["min_size"], options["max_size"]) == (0, 1)
    assert "max_uses" not in options
    null = presets.serverless(null=True, max_size=2)
    assert (null["min_size"], null["max_uses"], null["max_size"]) == (0, 1, 2)


def test_presets_build_valid_pools() -> None:
    for options in (
        presets.null_pool(),
        presets.serverless(),
        presets.serverless(null=True),
    ):
        poolkeeper.Pool("sqlite:///:memory:", **options).close()
