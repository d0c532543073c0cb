"""A throwaway PgBouncer in transaction mode in front of the test PostgreSQL.

:class:`PgBouncer` writes a config into a private directory, starts
``pgbouncer`` in the foreground on a free loopback port and stops it again.
It installs the Debian package with ``apt-get`` when the binary is missing
and the tests run as root. PgBouncer refuses to run as root, so it is then
started as the ``postgres`` user (which owns its directory).

The pytest fixture :func:`pgbouncer` (session scope) skips when PgBouncer
cannot be installed or started, except with ``CI=true``/``--require-db``,
where that fails the run. It depends on ``postgres_url``, so it also skips or
fails when PostgreSQL itself is down.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import require_db
from tests.support.pgcluster import _free_port

__all__ = ["PgBouncer", "find_pgbouncer", "pgbouncer"]

_CANDIDATES = ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer")


def find_pgbouncer() -> str | None:
    """Return the path of the pgbouncer binary, or None."""
    found = shutil.which("pgbouncer")
    if found:
        return found
    return next((p for p in _CANDIDATES if os.access(p, os.X_OK)), None)


def install_pgbouncer() -> str:
    """Find pgbouncer, installing it with apt-get when missing (root only).

    Raises:
        RuntimeError: It is missing and cannot be installed here.
    """
    found = find_pgbouncer()
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise RuntimeError("pgbouncer is not installed: apt-get install -y pgbouncer")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    result = subprocess.run(
        ["apt-get", "install", "-y", "pgbouncer"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    found = find_pgbouncer()
    if found is None:
        raise RuntimeError(
            f"apt-get install -y pgbouncer failed: {result.stderr[-500:]}"
        )
    return found


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 for a server started a moment later
    (below the ephemeral range: see :func:`tests.support.pgcluster._free_port`)."""
    return _free_port()


class PgBouncer:
    """One PgBouncer process: ``start()``, ``url``, ``admin()``, ``stop()``.

    Args:
        upstream_url: The PostgreSQL server to pool (``postgresql://user@host:port/db``).
        pool_mode: PgBouncer's ``pool_mode`` (default ``transaction``).
        default_pool_size: Server connections per user/database pair.
    """

    def __init__(
        self,
        upstream_url: str,
        *,
        pool_mode: str = "transaction",
        default_pool_size: int = 2,
    ) -> None:
        parts = urlsplit(upstream_url)
        self.user = parts.username or "postgres"
        self.database = parts.path.lstrip("/") or "postgres"
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 5432
        self.pool_mode = pool_mode
        self.default_pool_size = default_pool_size
        self.port = 0
        self.dir: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``postgresql://user@127.0.0.1:<port>/<db>`` through PgBouncer."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def _write_config(self, directory: Path) -> Path:
        (directory / "userlist.txt").write_text(f'"{self.user}" ""\n')
        ini = directory / "pgbouncer.ini"
        ini.write_text(
            "[databases]\n"
            f"* = host={self.upstream_host} port={self.upstream_port}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            # An empty unix_socket_dir: no socket file to collide with others.
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {directory / 'userlist.txt'}\n"
            f"admin_users = {self.user}\n"
            f"pool_mode = {self.pool_mode}\n"
            f"default_pool_size = {self.default_pool_size}\n"
            "max_client_conn = 500\n"
            "ignore_startup_parameters = extra_float_digits\n"
            f"logfile = {directory / 'pgbouncer.log'}\n"
            f"pidfile = {directory / 'pgbouncer.pid'}\n"
        )
        return ini

    def start(self, binary: str, timeout: float = 10.0) -> None:
        """Write the config and start PgBouncer; wait until it accepts connections.

        Raises:
            RuntimeError: It exited or did not listen within ``timeout``.
        """
        self.dir = Path(tempfile.mkdtemp(prefix="pk-pgbouncer-"))
        self.port = free_port()
        ini = self._write_config(self.dir)
        user: Any = None
        if os.geteuid() == 0:
            # PgBouncer refuses to run as root.
            account = pwd.getpwnam("postgres")
            for path in (self.dir, *self.dir.iterdir()):
                os.chown(path, account.pw_uid, account.pw_gid)
            user = account.pw_uid
        self.proc = subprocess.Popen(
            [binary, str(ini)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            user=user,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pgbouncer exited: {self.log()[-1000:]}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
            ):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"pgbouncer did not listen on port {self.port}")

    def log(self) -> str:
        """Return PgBouncer's log so far."""
        if self.dir is None:
            return ""
        path = self.dir / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def admin(self, command: str) -> list[tuple[Any, ...]]:
        """Run one admin console command (``SHOW POOLS``, ``RECONNECT``, ...)."""
        import psycopg

        # The admin console speaks only the simple query protocol.
        with psycopg.connect(
            f"postgresql://{self.user}@127.0.0.1:{self.port}/pgbouncer",
            autocommit=True,
            cursor_factory=psycopg.ClientCursor,
        ) as conn:
            cur = conn.execute(command)
            return list(cur.fetchall()) if cur.description else []

    def stop(self) -> None:
        """Stop PgBouncer and remove its directory."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


@pytest.fixture(scope="session")
def pgbouncer(pytestconfig: pytest.Config, postgres_url: str) -> Iterator[PgBouncer]:
    """A PgBouncer (transaction mode, ``default_pool_size = 2``) for the session."""
    bouncer = PgBouncer(postgres_url)
    try:
        bouncer.start(install_pgbouncer())
    except (RuntimeError, OSError, KeyError) as exc:
        message = f"cannot run PgBouncer: {exc}"
        if require_db(pytestconfig):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    try:
        yield bouncer
    finally:
        bouncer.stop()
