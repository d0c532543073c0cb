"""Drop-in replacements for other libraries' pools, backed by poolkeeper.

- :mod:`poolkeeper.compat.psycopg2`: ``SimpleConnectionPool`` and
  ``ThreadedConnectionPool`` with psycopg2's constructor and
  ``getconn``/``putconn``/``closeall``.
- :mod:`poolkeeper.compat.asyncpg`: ``create_pool()`` with asyncpg's
  arguments, ``acquire()``/``release()`` and the query shortcuts.
- :mod:`poolkeeper.compat.aiopg`: ``create_pool()`` with aiopg's arguments,
  ``acquire()``/``release()``, ``cursor()``, ``close()``/``wait_closed()``,
  ``terminate()`` and the ``size``/``freesize`` attributes.

Each module imports its database library, so import only the one you use.
The underlying :class:`poolkeeper.Pool` / :class:`poolkeeper.AsyncPool` is
available as ``.pool`` for stats, events and health checks. See the
"Drop-in compatibility" section of docs/DRIVERS.md for the differences.
"""
