"""Deprecated alias of :mod:`poolkeeper.django` (the Django backends' home).

``"ENGINE": "poolkeeper.integrations.django.postgresql"`` (or ``.mysql``)
keeps working; new settings should name ``"poolkeeper.django.postgresql"``.
"""
