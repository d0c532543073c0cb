"""Settings for running Django's own test suite on the poolkeeper backends.

Used by ``tools/django_suite.py`` as ``runtests.py --settings=...``; not a
test module. Both aliases Django's suite expects (``default`` and ``other``)
use one backend with a small pool: ``POOLKEEPER_DJANGO_BACKEND`` picks
``postgresql`` (the default; ``poolkeeper.django.postgresql`` against
``POOLKEEPER_TEST_POSTGRES_URL``, by default the local PostgreSQL) or
``mysql`` (``poolkeeper.django.mysql`` against ``POOLKEEPER_TEST_MYSQL_URL``,
by default the local MariaDB). With ``POOLKEEPER_DJANGO_STOCK=1`` the same
settings use Django's own backend without a pool instead, for comparing
counts. Test databases get per-process names, since other test runs may
share the server.

:class:`Runner` is Django's ``DiscoverRunner`` that skips, with the reason,
the few tests that check an implementation detail of Django's built-in
psycopg_pool integration rather than behaviour (:data:`KNOWN_DIFFERENCES`).
"""

from __future__ import annotations

import os
import unittest
from typing import Any

from django.db import connections  # type: ignore[import-untyped,unused-ignore]
from django.test.runner import DiscoverRunner  # type: ignore[import-untyped,unused-ignore]
from django.test.utils import iter_test_cases  # type: ignore[import-untyped,unused-ignore]

from tests.integration.frameworks.django_db import database

_backend = os.environ.get("POOLKEEPER_DJANGO_BACKEND", "postgresql")
_stock = os.environ.get("POOLKEEPER_DJANGO_STOCK", "") == "1"
_url = {
    "postgresql": os.environ.get(
        "POOLKEEPER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
    ),
    "mysql": os.environ.get(
        "POOLKEEPER_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test"
    ),
}[_backend]
_run = f"{os.getpid()}"


def _database(alias: str) -> dict[str, Any]:
    name = f"test_pk_django_{alias}_{_run}"
    if _stock:
        return database(
            _backend, _url, name, ENGINE=f"django.db.backends.{_backend}", OPTIONS={}
        )
    pool = {"min_size": 0, "max_size": 4, "timeout": 10}
    return database(_backend, _url, name, OPTIONS={"pool": pool})


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
        # The class really in use, so a silent fallback is visible in the log.
        wrapper = type(connections["default"])
        print(f"Django backend: {wrapper.__module__}.{wrapper.__qualname__}")
        if _stock:
            return suite
        for test in iter_test_cases(suite):
            reason = KNOWN_DIFFERENCES.get(test.id())
            if reason is not None:
                name = test._testMethodName
                method = getattr(test, name)
                setattr(test, name, unittest.skip(f"poolkeeper: {reason}")(method))
        return suite
