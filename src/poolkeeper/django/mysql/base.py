"""Alias of :mod:`poolkeeper.integrations.django.mysql.base` (Django loads ``ENGINE + ".base"``)."""

from __future__ import annotations

from poolkeeper.integrations.django.mysql.base import DatabaseWrapper, DjangoPool

__all__ = ["DatabaseWrapper", "DjangoPool"]
