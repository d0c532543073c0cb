"""A throwaway MariaDB server with TLS, on a free loopback port.

:class:`MariaDbServer` runs ``mariadb-install-db`` into a temporary directory
and starts ``mariadbd`` on ``127.0.0.1`` with the given certificate, as the
``mysql`` OS user when the tests run as root. Startup takes a few seconds.
Administrative statements go through the Unix socket as ``root``. The
server is stopped by its pid (SIGTERM, then SIGKILL) and the directory
removed by :meth:`MariaDbServer.destroy`, or at garbage collection.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from pathlib import Path
from typing import Any

from tests.support.pgcluster import _free_port

__all__ = ["MariaDbServer", "mariadb_available"]

MARIADBD = Path("/usr/sbin/mariadbd")
INSTALL_DB = shutil.which("mariadb-install-db") or "/usr/bin/mariadb-install-db"


def mariadb_available() -> str | None:
    """Say why a private server cannot be started here, or None if it can."""
    if not MARIADBD.is_file() or not Path(INSTALL_DB).is_file():
        return "mariadbd / mariadb-install-db not installed"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("mysql")
        except KeyError:
            return "running as root but there is no 'mysql' OS user"
    return None


def _stop(pid_file: Path, topdir: Path) -> None:
    """Stop the server named by ``pid_file`` and delete ``topdir``; never raises."""
    with contextlib.suppress(OSError, ValueError):
        pid = int(pid_file.read_text().strip())
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.05)
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(topdir, ignore_errors=True)


class MariaDbServer:
    """A private ``mariadbd`` with TLS (``have_ssl=YES``) on ``127.0.0.1``.

    Args:
        cert: Server certificate (PEM).
        key: Its private key.
        ca: The CA certificate the server announces.
        start_timeout: Seconds to wait for the server to accept connections.
    """

    host = "127.0.0.1"

    def __init__(
        self, cert: Path, key: Path, ca: Path, *, start_timeout: float = 20.0
    ) -> None:
        self._cert, self._key, self._ca = cert, key, ca
        self._timeout = start_timeout
        self.topdir = Path(tempfile.mkdtemp(prefix="mariadb-"))
        self.port = _free_port()
        self.socket = self.topdir / "mysqld.sock"
        self._pid_file = self.topdir / "mysqld.pid"
        self._finalizer = weakref.finalize(self, _stop, self._pid_file, self.topdir)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def logfile(self) -> Path:
        """The server's error log."""
        return self.topdir / "error.log"

    def start(self) -> MariaDbServer:
        """Create the data directory, start the server and wait until it answers.

        Raises:
            RuntimeError: installation or startup failed (with the log tail).
        """
        tls = self.topdir / "tls"
        tls.mkdir()
        for name, source in (("server.crt", self._cert), ("server.key", self._key)):
            shutil.copyfile(source, tls / name)
        shutil.copyfile(self._ca, tls / "ca.crt")
        user = []
        if os.geteuid() == 0:
            mysql = pwd.getpwnam("mysql")
            for path in (self.topdir, tls, *tls.iterdir()):
                os.chown(path, mysql.pw_uid, mysql.pw_gid)
            user = ["--user=mysql"]
        install = subprocess.run(
            [
                INSTALL_DB,
                "--no-defaults",
                f"--datadir={self.topdir / 'data'}",
                *user,
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ],
            capture_output=True,
            timeout=60,
            check=False,
        )
        if install.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed: {install.stderr[-2000:]!r}")
        self._proc = subprocess.Popen(
            [
                str(MARIADBD),
                "--no-defaults",
                f"--datadir={self.topdir / 'data'}",
                f"--port={self.port}",
                "--bind-address=127.0.0.1",
                f"--socket={self.socket}",
                f"--pid-file={self._pid_file}",
                f"--log-error={self.logfile}",
                f"--ssl-cert={tls / 'server.crt'}",
                f"--ssl-key={tls / 'server.key'}",
                f"--ssl-ca={tls / 'ca.crt'}",
                "--innodb-buffer-pool-size=16M",
                "--skip-name-resolve",
                *user,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self._timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                break
            if self._accepts():
                self.execute("SELECT 1")
                return
            time.sleep(0.1)
        raise RuntimeError(f"mariadbd did not start:\n{self.log_tail()}")

    def _accepts(self) -> bool:
        # A raw probe: PyMySQL leaks its socket when a Unix-socket connect fails.
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(str(self.socket))
            except OSError:
                return False
            return True

    def execute(self, query: str, args: Any = None) -> list[tuple[Any, ...]]:
        """Run one statement as ``root`` over the Unix socket; return its rows."""
        import pymysql

        conn = pymysql.connect(
            unix_socket=str(self.socket), user="root", connect_timeout=5
        )
        try:
            with conn.cursor() as cursor:
                cursor.execute(query, args)
                return list(cursor.fetchall())
        finally:
            conn.close()

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the error log."""
        try:
            text = self.logfile.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def destroy(self) -> None:
        """Stop the server by its pid and delete its directory; idempotent."""
        self._finalizer()
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=5)
