"""Django database backends whose connections come from a poolkeeper pool.

Set ``ENGINE`` to ``"poolkeeper.integrations.django.postgresql"`` (or the
shorter alias ``"poolkeeper.django.postgresql"``) and put the pool settings
under ``OPTIONS["pool"]``; see :mod:`poolkeeper.integrations.django.postgresql.base`.
"""
