"""Views that use the ORM, sync and async."""

from __future__ import annotations

from asgiref.sync import sync_to_async  # type: ignore[import-untyped,unused-ignore]
from django.db import connection, transaction  # type: ignore[import-untyped,unused-ignore]
from django.http import HttpRequest, JsonResponse  # type: ignore[import-untyped,unused-ignore]

from tests.integration.frameworks.djangoapp.models import Note


def notes(request: HttpRequest) -> JsonResponse:
    if request.method == "POST":
        Note.objects.create(text=request.POST["text"])
    return JsonResponse(
        {
            "notes": list(Note.objects.order_by("id").values_list("text", flat=True)),
            "backend_pid": connection.connection.info.backend_pid,
        }
    )


def fail_in_transaction(request: HttpRequest) -> JsonResponse:
    with transaction.atomic():
        Note.objects.create(text="rolled back")
        raise RuntimeError("boom")


def _count() -> int:
    return int(Note.objects.count())


async def count_async(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"count": await sync_to_async(_count)()})


def sleepy(request: HttpRequest) -> JsonResponse:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid() FROM pg_sleep(0.05)")
        (pid,) = cursor.fetchone()
    return JsonResponse({"pid": pid})
