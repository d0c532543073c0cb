"""Django database backends whose connections come from a poolkeeper pool.

Set ``ENGINE`` to ``"poolkeeper.integrations.django.postgresql"`` (psycopg 3)
or ``"poolkeeper.integrations.django.mysql"`` (MySQL/MariaDB, mysqlclient), or
the shorter aliases ``"poolkeeper.django.postgresql"`` /
``"poolkeeper.django.mysql"``, and put the pool settings under
``OPTIONS["pool"]``; see :mod:`poolkeeper.integrations.django.postgresql.base`,
:mod:`poolkeeper.integrations.django.mysql.base` and, for what both share,
:mod:`poolkeeper.integrations.django._pooled`.
"""
