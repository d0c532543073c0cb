"""Django with ``DATABASE_ROUTERS`` over a real primary and replica (run in a subprocess).

``test_django_router.py`` starts a private primary + streaming replica and runs
``python -m tests.integration.frameworks.django_router_app PRIMARY_PORT
REPLICA_PORT``: Django settings can be configured once per process, and the
other Django tests configure theirs. The settings are the docs/CLUSTERS.md
recipe: two aliases on ``poolkeeper.django.postgresql`` naming both hosts,
``target_session_attrs=read-write`` for ``default`` and ``prefer-standby`` for
``replica``, and a router sending reads to ``replica`` and writes to
``default``. Prints one JSON line of what each alias did.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

import django  # type: ignore[import-untyped,unused-ignore]
from django.conf import settings  # type: ignore[import-untyped,unused-ignore]


class PrimaryReplicaRouter:
    """Reads from ``replica``, writes and migrations on ``default``."""

    def db_for_read(self, model: Any, **hints: Any) -> str:
        return "replica"

    def db_for_write(self, model: Any, **hints: Any) -> str:
        return "default"

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool:
        return True  # the same data on both aliases

    def allow_migrate(
        self, db: str, app_label: str, model_name: str | None = None, **hints: Any
    ) -> bool:
        return db == "default"


def configure(primary: int, replica: int) -> None:
    common = {
        "ENGINE": "poolkeeper.django.postgresql",
        "NAME": "postgres",
        "USER": "postgres",
        "HOST": "127.0.0.1,127.0.0.1",
        "PORT": f"{primary},{replica}",
        "CONN_MAX_AGE": 0,
    }
    pool = {"min_size": 0, "max_size": 2, "timeout": 10}
    settings.configure(
        INSTALLED_APPS=["tests.integration.frameworks.djangoapp"],
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
        DATABASES={
            "default": {
                **common,
                "OPTIONS": {"target_session_attrs": "read-write", "pool": pool},
            },
            "replica": {
                **common,
                "OPTIONS": {"target_session_attrs": "prefer-standby", "pool": pool},
                "TEST": {"MIRROR": "default"},
            },
        },
        DATABASE_ROUTERS=[f"{__name__}.PrimaryReplicaRouter"],
    )
    django.setup()


def where(alias: str) -> tuple[int, bool]:
    """The port and ``pg_is_in_recovery()`` of the server an alias is connected to."""
    from django.db import connections  # type: ignore[import-untyped,unused-ignore]

    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT inet_server_port(), pg_is_in_recovery()")
        port, in_recovery = cursor.fetchone()
    return int(port), bool(in_recovery)


def replayed(read: Callable[[], object], limit: float = 10.0) -> None:
    """Retry ``read`` (on the replica) until it is true, for at most ``limit`` s."""
    from django.db import ProgrammingError  # type: ignore[import-untyped,unused-ignore]

    deadline = time.monotonic() + limit
    while True:
        try:
            if read():
                return
        except ProgrammingError:  # a table not replayed yet
            pass
        if time.monotonic() > deadline:
            raise AssertionError("the replica never caught up")
        time.sleep(0.02)


def main(primary: int, replica: int) -> dict[str, Any]:
    configure(primary, replica)
    from django.core.management import call_command  # type: ignore[import-untyped,unused-ignore]
    from django.db import connections  # type: ignore[import-untyped,unused-ignore]
    from django.test.utils import CaptureQueriesContext  # type: ignore[import-untyped,unused-ignore]

    from tests.integration.frameworks.djangoapp.models import Note

    call_command("migrate", database="default", verbosity=0)
    replayed(lambda: Note.objects.count() >= 0)  # the replica has the table
    default, replica_conn = connections["default"], connections["replica"]
    with (
        CaptureQueriesContext(default) as writes_w,
        CaptureQueriesContext(replica_conn) as writes_r,
    ):
        note = Note.objects.create(text="routed")
    with (
        CaptureQueriesContext(default) as reads_w,
        CaptureQueriesContext(replica_conn) as reads_r,
    ):
        # The replica replays the insert within a moment: read until it has.
        replayed(lambda: Note.objects.filter(pk=note.pk).exists())
        text = Note.objects.get(pk=note.pk).text
    result = {
        "write_queries": {"default": len(writes_w), "replica": len(writes_r)},
        "read_queries": {"default": len(reads_w), "replica": len(reads_r)},
        "text": text,
        "default": where("default"),
        "replica": where("replica"),
        "pools": {
            alias: type(connections[alias].pool).__module__
            + "."
            + type(connections[alias].pool).__name__
            for alias in ("default", "replica")
        },
        "distinct_pools": connections["default"].pool
        is not connections["replica"].pool,
    }
    connections.close_all()
    for alias in ("default", "replica"):
        connections[alias].close_pool()
    return result


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]), int(sys.argv[2]))))
