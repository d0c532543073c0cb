"""Deprecated alias of :mod:`poolkeeper.django.postgresql.base` (Django loads ``ENGINE + ".base"``)."""

from __future__ import annotations

from poolkeeper.django.postgresql.base import DatabaseWrapper, DjangoPool

__all__ = ["DatabaseWrapper", "DjangoPool"]
