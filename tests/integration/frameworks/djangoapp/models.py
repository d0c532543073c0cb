"""The test project's one model."""

from __future__ import annotations

from django.db import models  # type: ignore[import-untyped,unused-ignore]


class Note(models.Model):  # type: ignore[misc,unused-ignore]
    text = models.CharField(max_length=200)

    class Meta:
        app_label = "djangoapp"
