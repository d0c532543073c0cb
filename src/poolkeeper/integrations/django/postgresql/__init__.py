"""Deprecated alias of :mod:`poolkeeper.django.postgresql`."""
