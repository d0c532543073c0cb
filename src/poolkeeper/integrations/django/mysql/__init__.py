"""Deprecated alias of :mod:`poolkeeper.django.mysql`."""
