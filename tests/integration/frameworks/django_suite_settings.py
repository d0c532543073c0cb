"""Settings for running Django's own test suite on the poolkeeper backend.

Used by ``tools/django_suite.py`` as ``runtests.py --settings=...``; not a
test module. Both aliases Django's suite expects (``default`` and ``other``)
use ``poolkeeper.django.postgresql`` with a small pool, against the server
in ``POOLKEEPER_TEST_POSTGRES_URL`` (default: the local PostgreSQL). Test
databases get per-process names, since other test runs may share the server.

:class:`Runner` is Django's ``DiscoverRunner`` that skips, with the reason,
the few tests that check an implementation detail of Django's built-in
psycopg_pool integration rather than behaviour (:data:`KNOWN_DIFFERENCES`).
"""

from __future__ import annotations

import os
import unittest
from typing import Any
from urllib.parse import unquote, urlsplit

from django.test.runner import DiscoverRunner  # type: ignore[import-untyped,unused-ignore]
from django.test.utils import iter_test_cases  # type: ignore[import-untyped,unused-ignore]

_url = urlsplit(
    os.environ.get(
        "POOLKEEPER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
    )
)
_run = f"{os.getpid()}"


def _database(alias: str) -> dict[str, Any]:
    return {
        "ENGINE": "poolkeeper.django.postgresql",
        "NAME": _url.path.lstrip("/") or "postgres",
        "USER": unquote(_url.username or ""),
        "PASSWORD": unquote(_url.password or ""),
        "HOST": _url.hostname or "",
        "PORT": str(_url.port or ""),
        "OPTIONS": {"pool": {"min_size": 0, "max_size": 4, "timeout": 10}},
        "TEST": {"NAME": f"test_pk_django_{alias}_{_run}"},
    }


DATABASES = {"default": _database("default"), "other": _database("other")}
SECRET_KEY = "django_tests_secret_key"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
USE_TZ = False
TEST_RUNNER = "tests.integration.frameworks.django_suite_settings.Runner"

#: Test id -> why it cannot pass on poolkeeper although the behaviour matches.
KNOWN_DIFFERENCES = {
    "backends.postgresql.tests.Tests.test_connect_pool": (
        "expects psycopg_pool.PoolTimeout; poolkeeper raises poolkeeper.PoolTimeout "
        "after the same 5 s with max_size=2 (see test_django.py)"
    ),
}


class Runner(DiscoverRunner):  # type: ignore[misc,unused-ignore]
    """Django's test runner, skipping :data:`KNOWN_DIFFERENCES` with their reason."""

    def build_suite(self, *args: Any, **kwargs: Any) -> Any:
        suite = super().build_suite(*args, **kwargs)
        for test in iter_test_cases(suite):
            reason = KNOWN_DIFFERENCES.get(test.id())
            if reason is not None:
                name = test._testMethodName
                method = getattr(test, name)
                setattr(test, name, unittest.skip(f"poolkeeper: {reason}")(method))
        return suite
