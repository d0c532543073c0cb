"""What to do about a connect error: the root driver error and its matched fix.

``check``, ``bench`` and ``tune`` all report a failed connect the same way:
the driver's own error (found under any poolkeeper error that wraps it, such
as a :class:`~poolkeeper.PoolTimeout` chained to the last connect error) and
one line saying what to fix. The fixes are matched on the message text of
PostgreSQL (libpq, asyncpg, PgBouncer), MySQL/MariaDB (PyMySQL, mysqlclient,
aiomysql) and SQLite errors.
"""

from __future__ import annotations

#: The hint when no pattern matches the driver's message.
DEFAULT_FIX = "run with --debug for the full driver error"

_START_SERVER = (
    "start the server, or fix the host and port in the URL "
    "(is it listening there? PostgreSQL: listen_addresses and port; MariaDB: bind-address and port)"
)

#: (lower-case needle, fix), tried in order: the first needle found wins, so
#: specific patterns come before general ones.
_CONNECT_FIXES: tuple[tuple[str, str], ...] = (
    # --- network, any server ---
    ("connection refused", _START_SERVER),
    ("can't connect to mysql server", _START_SERVER),
    ("can't connect to server", _START_SERVER),
    ("unknown mysql server host", "check the host name in the URL for typos"),
    (
        "could not translate host name",
        "check the host name in the URL for typos, and that this machine's DNS can see it",
    ),
    # --- PostgreSQL ---
    (
        "password authentication failed",
        "check the user and password in the URL (percent-encode special characters such as @ : /)",
    ),
    (
        "no password supplied",
        "the server asks for a password: put it in the URL (user:password@host) or in ~/.pgpass",
    ),
    (
        "no pg_hba.conf entry",
        "allow this client in pg_hba.conf (type, database, user, address, SSL) and reload the server",
    ),
    (
        'role "',
        "create the role (CREATE ROLE name LOGIN) or fix the user name in the URL",
    ),
    (
        "does not exist",
        "create the database (createdb NAME, or CREATE DATABASE) or fix its name in the URL",
    ),
    (
        "too many clients",
        "the server is at max_connections: shrink pools (poolkeeper tune --processes N), close idle sessions, or put PgBouncer in front",
    ),
    (
        "remaining connection slots",
        "the server is at max_connections: shrink pools or put PgBouncer in front",
    ),
    (
        "no such database",
        "PgBouncer has no entry for this database: add it to the [databases] section of pgbouncer.ini",
    ),
    (
        "server login has been failing",
        "PgBouncer cannot log in to PostgreSQL: check the credentials in pgbouncer.ini",
    ),
    (
        "pgbouncer",
        "PgBouncer answered: check its [databases] entry, auth_file and that it can reach the server",
    ),
    ("starting up", "the server is still starting: wait and retry"),
    ("shutting down", "the server is shutting down: wait for the restart"),
    # --- MySQL / MariaDB (error numbers as the drivers print them) ---
    (
        "unknown database",
        "create the database (CREATE DATABASE name) or fix its name in the URL",
    ),
    (
        "to database",  # 1044: Access denied for user 'u'@'h' to database 'd'
        "the user may not use this database: GRANT ALL ON name.* TO 'user'@'host', or fix the database name",
    ),
    (
        "access denied for user",  # 1045
        "check the user and password in the URL (percent-encode special characters); "
        "MySQL/MariaDB match 'user'@'host': the account must exist for the host you connect from",
    ),
    (
        "is not allowed to connect",  # 1130
        "create the account for this client's host (CREATE USER 'user'@'%' ...) or connect from an allowed host",
    ),
    (
        "too many connections",  # 1040
        "the server is at max_connections: shrink pools (poolkeeper tune --processes N) or raise max_connections",
    ),
    (
        "authentication plugin",
        "the server wants an authentication plugin this driver lacks: install the driver's extra (e.g. PyMySQL[rsa]) or change the account's plugin",
    ),
    # --- SQLite ---
    (
        "unable to open database file",
        "SQLite cannot open the file: its directory must exist and be writable, and the path must not be a directory "
        "(sqlite:////absolute/path.db has four slashes, sqlite:///relative.db three)",
    ),
    (
        "file is not a database",
        "the file is not an SQLite database (or is encrypted): fix the path in the URL",
    ),
    (
        "readonly database",
        "SQLite cannot write the file: make the file and its directory writable by this user",
    ),
    (
        "database is locked",
        "another process holds a write lock: use journal_mode=WAL and a busy timeout (connect_args={'timeout': 30})",
    ),
    # --- generic, last ---
    (
        "ssl",
        "the TLS settings do not match: check sslmode in the URL and the server's ssl settings",
    ),
    (
        "timeout",
        "the connect took too long: check network latency, or raise connect_timeout",
    ),
    ("timed out", "the connect took too long: check network latency and firewalls"),
)


def connect_fix(message: str, default: str = DEFAULT_FIX) -> str:
    """Return a hint for a driver's connect error message (``default`` if none fits)."""
    lowered = message.lower()
    for needle, fix in _CONNECT_FIXES:
        if needle in lowered:
            return fix
    return default


def root_cause(exc: BaseException) -> BaseException:
    """Return the driver error under poolkeeper's own errors.

    A :class:`~poolkeeper.PoolTimeout` (or any :class:`~poolkeeper.PoolError`)
    raised because connecting kept failing is chained (``__cause__``) to the
    last connect error; that error, not the timeout, says what is wrong. A
    driver error is returned as it is.
    """
    from poolkeeper.errors import PoolError

    seen: set[int] = set()
    while (
        isinstance(exc, PoolError) and exc.__cause__ is not None and id(exc) not in seen
    ):
        seen.add(id(exc))
        exc = exc.__cause__
    return exc
