"""Alias of :mod:`poolkeeper.integrations.django.postgresql`."""
