"""Short import paths for the Django backends: ``poolkeeper.django.postgresql``, ``poolkeeper.django.mysql``.

The code lives in :mod:`poolkeeper.integrations.django`; this package only
re-exports it, so either name works as ``DATABASES[...]["ENGINE"]``.
"""
