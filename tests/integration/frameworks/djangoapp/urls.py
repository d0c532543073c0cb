from __future__ import annotations

from django.urls import path  # type: ignore[import-untyped,unused-ignore]

from tests.integration.frameworks.djangoapp import views

# Every view works on the database alias named first in its path.
urlpatterns = [
    path("<str:alias>/notes/", views.notes),
    path("<str:alias>/fail/", views.fail_in_transaction),
    path("<str:alias>/count/", views.count_async),
    path("<str:alias>/sleepy/", views.sleepy),
]
