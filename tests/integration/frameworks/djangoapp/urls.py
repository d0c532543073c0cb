from __future__ import annotations

from django.urls import path  # type: ignore[import-untyped,unused-ignore]

from tests.integration.frameworks.djangoapp import views

urlpatterns = [
    path("notes/", views.notes),
    path("fail/", views.fail_in_transaction),
    path("count/", views.count_async),
    path("sleepy/", views.sleepy),
]
