"""Alias of :mod:`poolkeeper.integrations.django.mysql`."""
