"""Deprecated alias of :mod:`poolkeeper.django.mysql.base` (Django loads ``ENGINE + ".base"``)."""

from __future__ import annotations

from poolkeeper.django.mysql.base import DatabaseWrapper, DjangoPool

__all__ = ["DatabaseWrapper", "DjangoPool"]
