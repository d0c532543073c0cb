"""An AWS Lambda handler with a module-level poolkeeper pool.

The pool is created once per execution environment (on the first
invocation, not at import) and reused by every warm invocation. After a pause
of ``DB_VALIDATE_AFTER`` seconds (a freeze between invocations) the idle
connection is pinged before use and replaced if the database, a proxy or a NAT
dropped it meanwhile.

Configuration comes from the function's environment, as usual on Lambda:

- ``DATABASE_URL``: where to connect (default: the local test server).
- ``DB_BEHIND_PROXY=1``: null-pool mode for RDS Proxy or PgBouncer, which do
  the pooling; every invocation opens and closes its own connection.
- ``DB_VALIDATE_AFTER``: seconds of pause that count as a freeze (default 5).
- ``DB_APPLICATION_NAME``: the ``application_name`` the server sees.

Deploy with ``poolkeeper[psycopg]`` in the package; the handler is
``lambda_handler.handler``. Run it locally (from the repository root, against
the local PostgreSQL): it invokes the handler three times, as three warm
invocations would, and prints each response; the same ``backend_pid`` shows
the connection was reused::

    .venv/bin/pip install -e ".[psycopg]" && .venv/bin/python examples/lambda_handler.py Ada
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from poolkeeper.serverless import ServerlessPool

db = ServerlessPool(
    os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"),
    null=os.environ.get("DB_BEHIND_PROXY") == "1",
    validate_after=float(os.environ.get("DB_VALIDATE_AFTER", "5")),
    connect_args={
        "application_name": os.environ.get("DB_APPLICATION_NAME", "lambda-example")
    },
)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Greet ``event["name"]`` from the database and report which session served it."""
    with db.connection() as conn:
        row = conn.execute(
            "SELECT pg_backend_pid(), 'hello ' || %s::text",
            (event.get("name", "world"),),
        ).fetchone()
    return {"statusCode": 200, "backend_pid": row[0], "body": row[1]}


if __name__ == "__main__":
    name = sys.argv[1] if len(sys.argv) > 1 else "world"
    for _ in range(3):
        print(json.dumps(handler({"name": name}, None)))
    stats = db.stats()
    print(f"{stats.invocations} invocations, {stats.cold_starts} cold start")
    db.close()
