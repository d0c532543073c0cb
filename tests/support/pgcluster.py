"""A throwaway PostgreSQL cluster for fault-injection tests.

:class:`PgCluster` runs ``initdb`` into a fresh temporary directory and starts a
postmaster on a free loopback port with trust authentication, so tests can stop,
crash, restart, freeze and reconfigure a server without touching the machine's own
PostgreSQL. Everything it creates is removed by :meth:`PgCluster.destroy`, and a
``weakref.finalize`` hook does the same at garbage collection or interpreter exit
if a test forgets.

PostgreSQL refuses to run as root, so when the tests run as root every server
binary is run as the ``postgres`` OS user through ``runuser``, and the temporary
directory is handed to that user.

Administrative queries (:meth:`~PgCluster.backends`, :meth:`~PgCluster.terminate`,
:meth:`~PgCluster.set_guc`) use one persistent superuser session over the unix
socket. Persistent, so that a ``pre_auth_delay`` does not slow them down; unix
socket, so that an nftables rule black-holing the TCP port does not block them.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import random
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal
from urllib.parse import quote, urlencode

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

__all__ = [
    "DEFAULT_BINDIR",
    "PgCluster",
    "PgClusterError",
    "StopMode",
    "pg_available",
]

DEFAULT_BINDIR = Path(
    os.environ.get("POOLKEEPER_PG_BINDIR", "/usr/lib/postgresql/15/bin")
)
ADMIN_APPLICATION_NAME = "pgcluster-admin"

StopMode = Literal["smart", "fast", "immediate"]
GucValue = str | int | float | bool | None

# Durability is pointless for a throwaway cluster and fsync dominates initdb and
# checkpoint time; small shared_buffers lets several clusters coexist.
_BASE_SETTINGS: dict[str, str] = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "16MB",
    "log_connections": "on",
    "log_min_messages": "warning",
}


class PgClusterError(RuntimeError):
    """A server binary failed; the message carries its output and the log tail."""


def pg_available(bindir: Path | str = DEFAULT_BINDIR) -> str | None:
    """Say why a cluster cannot be created here, or ``None`` if it can.

    Args:
        bindir: Directory holding ``initdb``, ``pg_ctl`` and ``postgres``.

    Returns:
        A human-readable reason to skip, or ``None``.
    """
    bindir = Path(bindir)
    for name in ("initdb", "pg_ctl", "postgres"):
        if not (bindir / name).is_file():
            return f"{bindir / name} not found (set POOLKEEPER_PG_BINDIR)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root but there is no 'postgres' OS user"
        if shutil.which("runuser") is None:
            return "running as root but runuser is not installed"
    return None


#: Ports this process handed out already (never twice).
_HANDED_OUT: set[int] = set()
_PORTS_LOCK = threading.Lock()


def _ephemeral_low() -> int:
    """The lowest port the kernel uses for outgoing connections."""
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        return int(text.split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _free_port() -> int:
    """A TCP port on 127.0.0.1 for a server a test starts a little later.

    Chosen at random below the kernel's ephemeral range, checked free by
    binding it, and never handed out twice by this process. A port from the
    ephemeral range (bind to port 0) can be taken, before the server binds
    it, as the local port of any outgoing connection, and the test legs that
    run beside each other open thousands: a Patroni member once failed
    "Address already in use" so. Below the range only another server can.
    """
    high = _ephemeral_low()
    low = max(1024, high - 20000)
    rng = random.SystemRandom()
    with _PORTS_LOCK:
        for _ in range(500):
            port = rng.randrange(low, high)
            if port in _HANDED_OUT:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _HANDED_OUT.add(port)
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))  # no luck below the range: any free one
        found: int = sock.getsockname()[1]
        return found


def _run_as_postgres() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def _clean_env() -> dict[str, str]:
    # PG* variables from the developer's shell (PGPORT, PGDATA, ...) must not
    # leak into pg_ctl or initdb.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    return env


def _read_pid(datadir: Path) -> int | None:
    try:
        first = (datadir / "postmaster.pid").read_text().split("\n", 1)[0]
        return int(first)
    except (OSError, ValueError):
        return None


def _pid_alive(pid: int) -> bool:
    # An orphaned postmaster is reparented to PID 1, which may take a while to
    # reap it; a zombie has released its port and files, so it counts as dead.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no procfs: fall back to signal 0 (zombies look alive)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _cleanup(pg_ctl: Path, datadir: Path, topdir: Path) -> None:
    """Stop whatever runs in ``datadir`` and delete ``topdir``; never raises."""
    pid = _read_pid(datadir)
    if pid is not None and _pid_alive(pid):
        # A frozen postmaster would ignore the shutdown signal forever.
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGCONT)
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(
                [
                    *_run_as_postgres(),
                    str(pg_ctl),
                    "stop",
                    "-D",
                    str(datadir),
                    "-m",
                    "immediate",
                    "-w",
                    "-t",
                    "10",
                ],
                cwd=topdir,
                env=_clean_env(),
                capture_output=True,
                timeout=15,
                check=False,
            )
        if _pid_alive(pid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    shutil.rmtree(topdir, ignore_errors=True)


class PgCluster:
    """A PostgreSQL cluster in a temporary directory, on ``127.0.0.1``.

    Args:
        port: TCP port; a free one is picked when ``None``. The port stays the
            same across :meth:`stop`/:meth:`start`, so URLs remain valid.
        max_connections: Passed to the postmaster (3 are reserved for
            superusers such as ``postgres``).
        bindir: Directory with the PostgreSQL 15 binaries.
        settings: Extra ``postgresql.conf`` settings (changeable later with
            :meth:`set_guc`, unlike the command-line ones).
        start_timeout: Seconds ``pg_ctl`` waits for start and stop.
        hba: ``pg_hba.conf`` lines for TCP clients (``hostssl all all
            127.0.0.1/32 scram-sha-256``...), replacing initdb's trust-all
            file. Unix-socket clients (the admin session) stay trusted.
        files: Files copied into the data directory before the first start,
            by name (``server.crt``, ``server.key`` for ``ssl = on``), owned by
            the server's OS user with mode 0600.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        port: int | None = None,
        max_connections: int = 40,
        *,
        bindir: Path | str = DEFAULT_BINDIR,
        settings: Mapping[str, str | int | float | bool] | None = None,
        start_timeout: float = 30.0,
        hba: Sequence[str] | None = None,
        files: Mapping[str, Path] | None = None,
    ) -> None:
        self._requested_port = port
        self._port = port
        self.max_connections = max_connections
        self._bindir = Path(bindir)
        self._settings = {**_BASE_SETTINGS}
        for name, value in (settings or {}).items():
            self._settings[name] = _guc_text(value)
        self._timeout = start_timeout
        self._hba = list(hba) if hba is not None else None
        self._files = dict(files or {})
        self._topdir: Path | None = None
        self._admin: psycopg.Connection[TupleRow] | None = None
        self._admin_lock = threading.Lock()
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._changed_gucs: set[str] = set()

    # ------------------------------------------------------------- properties

    @property
    def port(self) -> int:
        """The TCP port (picked on the first :meth:`start` if not given)."""
        if self._port is None:
            raise RuntimeError("PgCluster not started yet")
        return self._port

    @property
    def datadir(self) -> Path:
        """The data directory."""
        return self._dir() / "data"

    @property
    def socket_dir(self) -> Path:
        """The unix socket directory (``host`` for a socket connection)."""
        return self._dir() / "sock"

    @property
    def logfile(self) -> Path:
        """The server log written by ``pg_ctl -l``."""
        return self._dir() / "server.log"

    @property
    def is_running(self) -> bool:
        """Whether a postmaster is alive for this data directory."""
        if self._topdir is None:
            return False
        pid = _read_pid(self.datadir)
        return pid is not None and _pid_alive(pid)

    # -------------------------------------------------------------- lifecycle

    def start(self) -> PgCluster:
        """Create the cluster on first use, then start the server and wait for it.

        Returns:
            The cluster itself, for chaining.

        Raises:
            PgClusterError: If ``initdb`` or ``pg_ctl start`` fails.
        """
        if self._topdir is None:
            self._init()
        if self.is_running:
            return self
        if self._port is None:
            self._port = _free_port()
        try:
            self._start_server()
        except PgClusterError:
            if self._requested_port is not None or "already in use" not in str(
                self.log_tail()
            ):
                raise
            # Someone grabbed the auto-picked port between pick and bind.
            self._port = _free_port()
            self._start_server()
        return self

    def stop(self, mode: StopMode = "fast") -> None:
        """Stop the server; a no-op if it is not running.

        Args:
            mode: ``fast`` (disconnect clients, clean shutdown), ``immediate``
                (crash-like, recovery on next start) or ``smart`` (wait for
                clients to leave).

        Raises:
            PgClusterError: If ``pg_ctl stop`` fails.
        """
        self._close_admin()
        if not self.is_running:
            return
        pid = self.postmaster_pid()
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGCONT)  # a frozen postmaster cannot shut down
        self._pg_ctl("stop", "-m", mode, "-w", "-t", str(int(self._timeout)))

    def restart(self, mode: StopMode = "fast") -> None:
        """Stop (with ``mode``) and start again on the same port."""
        self.stop(mode)
        self.start()

    def destroy(self) -> None:
        """Stop the server (immediately) and delete the directory; idempotent."""
        self._close_admin()
        if self._finalizer is not None:
            self._finalizer()
        self._topdir = None

    def __enter__(self) -> PgCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.destroy()

    # ------------------------------------------------------------- connecting

    def url(
        self,
        user: str = "postgres",
        dbname: str = "postgres",
        application_name: str | None = None,
        *,
        port: int | None = None,
        **params: str | int | float,
    ) -> str:
        """Build a ``postgresql://`` URL for this cluster.

        Args:
            user: Role to connect as (trust auth: no password).
            dbname: Database name.
            application_name: Added as a parameter when given, so backends can
                be counted with :meth:`backends`.
            port: Override the port, e.g. with a :class:`FaultProxy` port.
            **params: Extra libpq parameters such as ``connect_timeout``.

        Returns:
            The URL.
        """
        query: dict[str, str | int | float] = {}
        if application_name is not None:
            query["application_name"] = application_name
        query.update(params)
        url = (
            f"postgresql://{quote(user, safe='')}@{self.host}:"
            f"{port if port is not None else self.port}/{quote(dbname, safe='')}"
        )
        return f"{url}?{urlencode(query)}" if query else url

    def postmaster_pid(self) -> int:
        """The postmaster's pid, from ``postmaster.pid``.

        Raises:
            PgClusterError: If the server is not running.
        """
        pid = _read_pid(self.datadir) if self._topdir is not None else None
        if pid is None or not _pid_alive(pid):
            raise PgClusterError("PostgreSQL is not running")
        return pid

    # ---------------------------------------------------------------- faults

    def backends(self, application_name: str) -> int:
        """Count sessions in ``pg_stat_activity`` with this application name."""
        row = self._admin_query(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
            (application_name,),
        )
        return int(row[0])

    def active_backends(self, application_name: str) -> int:
        """Count sessions with this application name that are running a query."""
        row = self._admin_query(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE application_name = %s AND state = 'active'",
            (application_name,),
        )
        return int(row[0])

    def backend_pids(self, application_name: str) -> list[int]:
        """Pids of the sessions with this application name, sorted."""
        row = self._admin_query(
            "SELECT coalesce(array_agg(pid ORDER BY pid), '{}') FROM pg_stat_activity"
            " WHERE application_name = %s",
            (application_name,),
        )
        return list(row[0])

    def terminate(self, application_name: str, wait: float = 5.0) -> int:
        """``pg_terminate_backend`` every session with this application name.

        Args:
            application_name: Which sessions to kill.
            wait: Seconds to wait for each backend to exit, so that a following
                :meth:`backends` already reports 0.

        Returns:
            How many sessions were terminated.
        """
        # MATERIALIZED fixes the evaluation order: the planner may otherwise run
        # the (volatile) terminate call before the application_name filter.
        row = self._admin_query(
            "WITH victims AS MATERIALIZED ("
            " SELECT pid FROM pg_stat_activity"
            " WHERE application_name = %s AND pid <> pg_backend_pid())"
            " SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, %s))"
            " FROM victims",
            (application_name, int(wait * 1000)),
        )
        return int(row[0])

    def set_guc(self, name: str, value: GucValue) -> None:
        """``ALTER SYSTEM SET`` (or ``RESET`` for ``None``), then reload.

        Returns only once the postmaster has re-read its configuration, so new
        connections see the value (for example ``pre_auth_delay``). Settings
        that need a restart take effect at the next :meth:`restart`.

        Args:
            name: Parameter name.
            value: New value; ``None`` resets it to the configured default.
        """
        if value is None:
            stmt = sql.SQL("ALTER SYSTEM RESET {}").format(sql.Identifier(name))
            self._changed_gucs.discard(name)
        else:
            stmt = sql.SQL("ALTER SYSTEM SET {} = {}").format(
                sql.Identifier(name), sql.Literal(_guc_text(value))
            )
            self._changed_gucs.add(name)
        with self._admin_lock:
            conn = self._admin_conn()
            before = conn.execute("SELECT pg_conf_load_time()").fetchone()
            conn.execute(stmt)
            conn.execute("SELECT pg_reload_conf()")
            # pg_reload_conf() only signals the postmaster. It re-reads the files
            # and then signals its children, so once this session's own load time
            # moves, the postmaster (which forks new sessions) has the value too.
            deadline = time.monotonic() + 5.0
            while conn.execute("SELECT pg_conf_load_time()").fetchone() == before:
                if time.monotonic() > deadline:
                    raise PgClusterError(f"reload for {name} not seen within 5 s")
                time.sleep(0.01)

    def set_password(self, role: str, password: str, *, create: bool = False) -> None:
        """``ALTER ROLE role PASSWORD ...`` (``CREATE ROLE ... LOGIN`` first if asked).

        The password is hashed with the server's ``password_encryption``
        (``scram-sha-256`` by default on PostgreSQL 15).
        """
        verb = (
            "CREATE ROLE {} LOGIN PASSWORD {}"
            if create
            else "ALTER ROLE {} PASSWORD {}"
        )
        stmt = sql.SQL(verb).format(sql.Identifier(role), sql.Literal(password))
        with self._admin_lock:
            self._admin_conn().execute(stmt)

    def reset_gucs(self) -> None:
        """Undo every :meth:`set_guc` made through this object."""
        for name in sorted(self._changed_gucs):
            self.set_guc(name, None)

    @contextlib.contextmanager
    def frozen(self, pid: int | None = None) -> Iterator[int]:
        """SIGSTOP a server process (the postmaster by default), SIGCONT on exit.

        Args:
            pid: A backend pid, or ``None`` for the postmaster.

        Yields:
            The frozen pid.
        """
        target = self.postmaster_pid() if pid is None else pid
        os.kill(target, signal.SIGSTOP)
        try:
            yield target
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(target, signal.SIGCONT)

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the server log, for failure messages."""
        try:
            text = self.logfile.read_text(errors="replace")
        except (OSError, RuntimeError):
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # --------------------------------------------------------------- internals

    def _dir(self) -> Path:
        if self._topdir is None:
            raise RuntimeError("PgCluster not started (or destroyed)")
        return self._topdir

    def _init(self) -> None:
        reason = pg_available(self._bindir)
        if reason is not None:
            raise PgClusterError(reason)
        topdir = Path(tempfile.mkdtemp(prefix="pgcluster-"))
        self._topdir = topdir
        # Registered before anything can fail, so a half-built cluster is removed.
        self._finalizer = weakref.finalize(
            self, _cleanup, self._bindir / "pg_ctl", topdir / "data", topdir
        )
        (topdir / "sock").mkdir()
        if os.geteuid() == 0:
            pg = pwd.getpwnam("postgres")
            for path in (topdir, topdir / "sock"):
                os.chown(path, pg.pw_uid, pg.pw_gid)
        self._run(
            "initdb",
            [
                "-D",
                str(self.datadir),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ],
        )
        # Appending to the existing file keeps its owner (postgres), even as root.
        with (self.datadir / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{k} = '{v}'\n" for k, v in self._settings.items())
        if self._hba is not None:
            # Truncating keeps the owner too.
            with (self.datadir / "pg_hba.conf").open("w") as hba:
                hba.write("local all all trust\n")
                hba.writelines(f"{line}\n" for line in self._hba)
        for name, source in self._files.items():
            target = self.datadir / name
            shutil.copyfile(source, target)
            target.chmod(0o600)
            if os.geteuid() == 0:
                pg = pwd.getpwnam("postgres")
                os.chown(target, pg.pw_uid, pg.pw_gid)

    def _start_server(self) -> None:
        options = [
            f"-p {self.port}",
            f"-k {shlex.quote(str(self.socket_dir))}",
            "-c listen_addresses=127.0.0.1",
            f"-c max_connections={self.max_connections}",
        ]
        self._pg_ctl(
            "start",
            "-l",
            str(self.logfile),
            "-o",
            " ".join(options),
            "-w",
            "-t",
            str(int(self._timeout)),
        )

    def _pg_ctl(self, *args: str) -> None:
        self._run("pg_ctl", ["-D", str(self.datadir), *args])

    def _run(self, program: str, args: Sequence[str]) -> None:
        try:
            proc = subprocess.run(
                [*_run_as_postgres(), str(self._bindir / program), *args],
                cwd=self._dir(),  # the postgres user may not be able to read ours
                env=_clean_env(),
                capture_output=True,
                text=True,
                timeout=self._timeout + 10,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise PgClusterError(f"{program} timed out\n{self.log_tail()}") from exc
        if proc.returncode != 0:
            raise PgClusterError(
                f"{program} {' '.join(args)} exited {proc.returncode}\n"
                f"{proc.stdout}{proc.stderr}\n--- server log ---\n{self.log_tail()}"
            )

    def _admin_conn(self) -> psycopg.Connection[TupleRow]:
        conn = self._admin
        if conn is None or conn.closed or conn.broken:
            if conn is not None:
                conn.close()
            conn = psycopg.connect(
                host=str(self.socket_dir),
                port=self.port,
                user="postgres",
                dbname="postgres",
                application_name=ADMIN_APPLICATION_NAME,
                autocommit=True,
                connect_timeout=5,
            )
            self._admin = conn
        return conn

    def _admin_query(self, query: str, params: Sequence[Any]) -> TupleRow:
        with self._admin_lock:
            try:
                return self._fetch_one(query, params)
            except psycopg.OperationalError:
                # The admin session may have been killed by a test (terminate
                # everything, restart); reconnect once.
                self._close_admin_locked()
            return self._fetch_one(query, params)

    def _fetch_one(self, query: str, params: Sequence[Any]) -> TupleRow:
        row = self._admin_conn().execute(query, params).fetchone()
        if row is None:
            raise PgClusterError(f"no row from {query!r}")
        return row

    def _close_admin(self) -> None:
        with self._admin_lock:
            self._close_admin_locked()

    def _close_admin_locked(self) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None


def _guc_text(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)
