"""Alias of :mod:`poolkeeper.integrations.django.postgresql.base` (Django loads ``ENGINE + ".base"``)."""

from __future__ import annotations

from poolkeeper.integrations.django.postgresql.base import DatabaseWrapper, DjangoPool

__all__ = ["DatabaseWrapper", "DjangoPool"]
