"""Django database backends whose connections come from a poolkeeper pool.

Set ``ENGINE`` to ``"poolkeeper.django.postgresql"`` (psycopg 3) or
``"poolkeeper.django.mysql"`` (MySQL/MariaDB, mysqlclient) and put the pool
settings under ``OPTIONS["pool"]``; see :mod:`poolkeeper.django.postgresql.base`,
:mod:`poolkeeper.django.mysql.base` and, for what both share,
:mod:`poolkeeper.django._pooled`. The older names
``"poolkeeper.integrations.django.postgresql"`` / ``...mysql`` are deprecated
aliases of these.
"""
