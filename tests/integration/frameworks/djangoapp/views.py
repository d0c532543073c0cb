"""Views that use the ORM, sync and async, on the database alias in the URL."""

from __future__ import annotations

from asgiref.sync import sync_to_async  # type: ignore[import-untyped,unused-ignore]
from django.db import connections, transaction  # type: ignore[import-untyped,unused-ignore]
from django.http import HttpRequest, JsonResponse  # type: ignore[import-untyped,unused-ignore]

from tests.integration.frameworks.djangoapp.models import Note

#: The server session id of the current connection, per Django vendor.
SESSION_ID_SQL = {
    "postgresql": "SELECT pg_backend_pid()",
    "mysql": "SELECT CONNECTION_ID()",
}
#: The same after a 50 ms server-side sleep (holds the connection a while).
SLEEPY_SESSION_ID_SQL = {
    "postgresql": "SELECT pg_backend_pid() FROM pg_sleep(0.05)",
    "mysql": "SELECT CONNECTION_ID() FROM (SELECT SLEEP(0.05)) AS slept",
}


def session_id(alias: str, sql: dict[str, str] = SESSION_ID_SQL) -> int:
    """The server session serving ``alias`` in this thread (pid / connection id)."""
    connection = connections[alias]
    with connection.cursor() as cursor:
        cursor.execute(sql[connection.vendor])
        (pid,) = cursor.fetchone()
    return int(pid)


def notes(request: HttpRequest, alias: str) -> JsonResponse:
    if request.method == "POST":
        Note.objects.using(alias).create(text=request.POST["text"])
    texts = Note.objects.using(alias).order_by("id").values_list("text", flat=True)
    return JsonResponse({"notes": list(texts), "backend_pid": session_id(alias)})


def fail_in_transaction(request: HttpRequest, alias: str) -> JsonResponse:
    with transaction.atomic(using=alias):
        Note.objects.using(alias).create(text="rolled back")
        raise RuntimeError("boom")


def _count(alias: str) -> int:
    return int(Note.objects.using(alias).count())


async def count_async(request: HttpRequest, alias: str) -> JsonResponse:
    return JsonResponse({"count": await sync_to_async(_count)(alias)})


def sleepy(request: HttpRequest, alias: str) -> JsonResponse:
    return JsonResponse({"pid": session_id(alias, SLEEPY_SESSION_ID_SQL)})
