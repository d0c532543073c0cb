"""A three-member Patroni cluster with a single-node etcd, all on loopback ports.

Follows ``../shared/PATRONI.md`` (checked with Debian's patroni 3.0 and
etcd-server 3.4): etcd's v3 API on a free port, each ``patroni CONFIG`` run as
the ``postgres`` OS user through ``setpriv`` (which replaces itself with
patroni, so the pid we hold is patroni's), the first member alone until it
leads, then the others; ready when the leader streams to every replica and
``GET /cluster`` shows them all running.

Faults: :meth:`PatroniCluster.switchover` (the REST API's ``POST /switchover``,
what ``patronictl switchover`` calls) and :meth:`PatroniCluster.kill_postmaster`
(``kill -9`` of a member's postmaster). Everything is stopped by pid in
:meth:`PatroniCluster.stop`; PostgreSQL is not patroni's child, so a server
left behind is stopped with ``pg_ctl -m immediate``.

Patroni config files are written as JSON, which is valid YAML.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.pgcluster import DEFAULT_BINDIR, _clean_env, _free_port, _pid_alive

__all__ = [
    "PatroniCluster",
    "PatroniMember",
    "patroni_available",
    "patroni_cluster",
]


def patroni_available() -> str | None:
    """Say why a Patroni cluster cannot run here, or None if it can."""
    for program in ("patroni", "etcd"):
        if shutil.which(program) is None:
            return (
                f"{program} is not installed (apt-get install patroni etcd-server "
                "etcd-client; scripts/test installs them)"
            )
    if not (DEFAULT_BINDIR / "pg_ctl").exists():
        return f"no PostgreSQL binaries in {DEFAULT_BINDIR}"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no postgres OS user"
    return None


@dataclass
class PatroniMember:
    """One Patroni member: its name, ports, directory and patroni process."""

    name: str
    port: int
    api_port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def datadir(self) -> Path:
        """The member's PostgreSQL data directory."""
        return self.directory / "data"

    @property
    def api(self) -> str:
        """The REST API base URL."""
        return f"http://127.0.0.1:{self.api_port}"

    def postmaster_pid(self) -> int | None:
        """The pid in ``postmaster.pid``, if the server runs."""
        try:
            pid = int((self.datadir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        return pid if _pid_alive(pid) else None


def _http(
    url: str, body: dict[str, Any] | None = None, timeout: float = 5.0
) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


class PatroniCluster:
    """etcd plus ``size`` Patroni members on free loopback ports.

    Args:
        size: Number of members (the recipe uses 3).
        ready_timeout: Seconds to wait for the whole cluster to be ready.
    """

    def __init__(self, size: int = 3, ready_timeout: float = 60.0) -> None:
        self.size = size
        self.ready_timeout = ready_timeout
        self.topdir = Path(tempfile.mkdtemp(prefix="patroni-"))
        self.etcd_port = _free_port()
        self.etcd_peer_port = _free_port()
        self.etcd: subprocess.Popen[bytes] | None = None
        self.members = [
            PatroniMember(f"m{i}", _free_port(), _free_port(), self.topdir / f"m{i}")
            for i in range(size)
        ]

    # -------------------------------------------------------------- lifecycle

    def start(self) -> PatroniCluster:
        """Start etcd, the first member, then the others; wait until ready."""
        try:
            self._start_etcd()
            first, *others = self.members
            self._start_member(first)
            self._wait(
                lambda: _http(f"{first.api}/primary", timeout=1)[0] == 200, "leader"
            )
            for member in others:
                self._start_member(member)
            self._wait(self._is_ready, "replicas streaming")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every patroni, any server left, then etcd; remove the directory."""
        running = [m for m in self.members if m.process is not None]
        for member in running:
            with contextlib.suppress(OSError):
                member.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        for member in running:
            proc = member.process
            assert proc is not None
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
            member.process = None
        for member in self.members:
            if member.postmaster_pid() is not None:
                self._pg_ctl_stop(member)
        if self.etcd is not None:
            self.etcd.terminate()
            try:
                self.etcd.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.etcd.kill()
                self.etcd.wait(timeout=5)
            self.etcd = None
        shutil.rmtree(self.topdir, ignore_errors=True)

    def __enter__(self) -> PatroniCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----------------------------------------------------------------- access

    @property
    def api_urls(self) -> list[str]:
        """Every member's REST API base URL."""
        return [m.api for m in self.members]

    def url(self, driver: str = "psycopg", dbname: str = "postgres") -> str:
        """A multi-host URL naming every member's PostgreSQL."""
        hosts = ",".join(f"127.0.0.1:{m.port}" for m in self.members)
        return f"postgresql+{driver}://postgres@{hosts}/{dbname}"

    def cluster_view(self) -> list[dict[str, Any]]:
        """``GET /cluster``'s member list, from the first member that answers."""
        for member in self.members:
            with contextlib.suppress(OSError):
                status, body = _http(f"{member.api}/cluster", timeout=2)
                if status == 200 and isinstance(body, dict):
                    return list(body.get("members", []))
        return []

    def leader(self) -> PatroniMember | None:
        """The member Patroni names leader (running), if any."""
        for entry in self.cluster_view():
            if entry.get("role") == "leader" and entry.get("state") == "running":
                return self.member(entry["name"])
        return None

    def member(self, name: str) -> PatroniMember:
        """The member called ``name``."""
        return next(m for m in self.members if m.name == name)

    def caught_up_replicas(self) -> list[PatroniMember]:
        """Replicas the leader streams to that have replayed all it wrote.

        Read from the leader's own ``pg_stat_replication`` (Patroni names each
        walsender after its member), not from Patroni's view: a demoted leader
        lists there as a running replica while it still rewinds, and a
        switchover to it can then leave the new leader stuck "starting up".
        """
        leader = self.leader()
        if leader is None:
            return []
        names = _ask_all(
            leader.port,
            "SELECT application_name FROM pg_stat_replication"
            " WHERE state = 'streaming'"
            " AND replay_lsn >= pg_current_wal_lsn()",
        )
        return [m for m in self.members if m.name in names and m is not leader]

    def switchover(self, candidate: PatroniMember, timeout: float = 30.0) -> None:
        """Move the leader to ``candidate`` (``POST /switchover``), waiting for writes.

        Returns once ``candidate`` is a primary that accepts writes.
        """
        leader = self.leader()
        assert leader is not None, "no leader to switch over from"
        status, body = _http(
            f"{leader.api}/switchover",
            {"leader": leader.name, "candidate": candidate.name},
            timeout=timeout,
        )
        if status != 200:
            raise RuntimeError(f"switchover refused: {status} {body}")
        self._wait(lambda: self._writable(candidate), "new leader writable", timeout)

    def kill_postmaster(self, member: PatroniMember) -> None:
        """``kill -9`` the member's postmaster (Patroni restarts or fails over)."""
        pid = member.postmaster_pid()
        assert pid is not None, f"{member.name} has no running server"
        os.kill(pid, signal.SIGKILL)

    def patch_config(self, **settings: Any) -> None:
        """Change the cluster's dynamic configuration (``PATCH /config``).

        For example ``primary_start_timeout=0``: a crashed leader's server is
        then not restarted in place; another member is promoted at once.
        """
        leader = self.leader()
        assert leader is not None, "no leader to configure"
        request = urllib.request.Request(
            f"{leader.api}/config",
            data=json.dumps(settings).encode(),
            headers={"Content-Type": "application/json"},
            method="PATCH",
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            if response.status != 200:
                raise RuntimeError(f"PATCH /config refused: {response.status}")

    def wait_writable_leader(self, timeout: float = 30.0) -> PatroniMember:
        """Poll until the member Patroni names leader accepts writes; return it."""
        found: list[PatroniMember] = []

        def ready() -> bool:
            leader = self.leader()
            if leader is not None and self._writable(leader):
                found.append(leader)
                return True
            return False

        self._wait(ready, "a writable leader", timeout)
        return found[-1]

    def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until every member runs and the leader streams to every replica."""
        self._wait(self._is_ready, "replicas streaming", timeout)

    # -------------------------------------------------------------- internals

    def _as_postgres(self) -> list[str]:
        if os.geteuid() != 0:
            return []
        return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups"]

    def _chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            pg = pwd.getpwnam("postgres")
            os.chown(path, pg.pw_uid, pg.pw_gid)

    def _start_etcd(self) -> None:
        data = self.topdir / "etcd"
        client = f"http://127.0.0.1:{self.etcd_port}"
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        log = (self.topdir / "etcd.log").open("wb")
        self.etcd = subprocess.Popen(
            [
                "etcd",
                *("--name", "t", "--data-dir", str(data), "--logger=zap"),
                *("--listen-client-urls", client, "--advertise-client-urls", client),
                *("--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer),
                *("--initial-cluster", f"t={peer}", "--initial-cluster-state", "new"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_clean_env(),
            start_new_session=True,
        )
        log.close()
        self._wait(lambda: _http(f"{client}/health", timeout=1)[0] == 200, "etcd")

    def _config(self, member: PatroniMember) -> dict[str, Any]:
        return {
            "scope": "poolkeeper",
            "namespace": f"/{self.topdir.name}/",
            "name": member.name,
            "restapi": {
                "listen": f"127.0.0.1:{member.api_port}",
                "connect_address": f"127.0.0.1:{member.api_port}",
            },
            "etcd3": {"hosts": f"127.0.0.1:{self.etcd_port}"},
            "bootstrap": {
                "dcs": {
                    "ttl": 10,
                    "loop_wait": 2,
                    "retry_timeout": 4,
                    "postgresql": {
                        "use_pg_rewind": True,
                        "use_slots": True,
                        "parameters": {
                            "wal_level": "replica",
                            "hot_standby": "on",
                            "wal_log_hints": "on",
                            "max_connections": 40,
                            "max_wal_senders": 10,
                            "max_replication_slots": 10,
                            "shared_buffers": "16MB",
                            "fsync": "off",
                            "synchronous_commit": "off",
                            "full_page_writes": "off",
                            "wal_receiver_status_interval": "1s",
                        },
                    },
                },
                "initdb": [{"encoding": "UTF8"}, {"locale": "C"}],
            },
            "postgresql": {
                "listen": f"127.0.0.1:{member.port}",
                "connect_address": f"127.0.0.1:{member.port}",
                "data_dir": str(member.datadir),
                "bin_dir": str(DEFAULT_BINDIR),
                "pgpass": str(member.directory / "pgpass"),
                "authentication": {
                    "superuser": {"username": "postgres"},
                    "replication": {"username": "postgres"},
                    "rewind": {"username": "postgres"},
                },
                "parameters": {"unix_socket_directories": str(member.directory)},
                "pg_hba": [
                    "local all all trust",
                    "host all all 127.0.0.1/32 trust",
                    "host replication all 127.0.0.1/32 trust",
                ],
            },
        }

    def _start_member(self, member: PatroniMember) -> None:
        member.directory.mkdir(mode=0o700)
        self._chown(self.topdir)
        self._chown(member.directory)
        config = member.directory / "patroni.yml"
        config.write_text(json.dumps(self._config(member), indent=1))
        self._chown(config)
        log = (member.directory / "patroni.log").open("wb")
        member.process = subprocess.Popen(
            [*self._as_postgres(), "patroni", str(config)],
            cwd=member.directory,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_clean_env(),
            start_new_session=True,
        )
        log.close()

    def _is_ready(self) -> bool:
        view = self.cluster_view()
        running = [m for m in view if m.get("state") == "running"]
        leader = self.leader()
        if len(running) < self.size or leader is None:
            return False
        streaming = _ask(
            leader.port,
            "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
        )
        return streaming is not None and streaming >= self.size - 1

    def _writable(self, member: PatroniMember) -> bool:
        return bool(
            _ask(
                member.port,
                "SELECT NOT pg_is_in_recovery()"
                " AND current_setting('transaction_read_only') = 'off'",
            )
        )

    def _wait(self, ready: Any, what: str, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout or self.ready_timeout)
        while True:
            with contextlib.suppress(OSError):
                if ready():
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"Patroni cluster: {what} not reached\n{self.logs()}"
                )
            time.sleep(0.1)

    def _pg_ctl_stop(self, member: PatroniMember) -> None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(
                [
                    *self._as_postgres(),
                    str(DEFAULT_BINDIR / "pg_ctl"),
                    *("stop", "-D", str(member.datadir), "-m", "immediate", "-w"),
                ],
                cwd=self.topdir,
                env=_clean_env(),
                capture_output=True,
                timeout=15,
                check=False,
            )
        pid = member.postmaster_pid()
        if pid is not None:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    def logs(self, lines: int = 15) -> str:
        """The tail of each patroni log, for failure messages."""
        parts = []
        for member in self.members:
            path = member.directory / "patroni.log"
            with contextlib.suppress(OSError):
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {member.name} ---\n" + "\n".join(tail))
        return "\n".join(parts)


def _rows(port: int, query: str) -> list[tuple[Any, ...]] | None:
    """Every row from a member's PostgreSQL, or None when it cannot answer."""
    try:
        with psycopg.connect(
            host="127.0.0.1",
            port=port,
            user="postgres",
            dbname="postgres",
            connect_timeout=2,
            autocommit=True,
        ) as conn:
            return conn.execute(query).fetchall()
    except psycopg.Error:
        return None


def _ask(port: int, query: str) -> Any:
    """One value from a member's PostgreSQL, or None when it cannot answer."""
    rows = _rows(port, query)
    return rows[0][0] if rows else None


def _ask_all(port: int, query: str) -> set[Any]:
    """The first column of every row (empty when the member cannot answer)."""
    return {row[0] for row in _rows(port, query) or []}


@contextlib.contextmanager
def patroni_cluster(config: pytest.Config, size: int = 3) -> Iterator[PatroniCluster]:
    """Run a :class:`PatroniCluster` for a fixture.

    Skips when patroni or etcd is missing, except with ``CI=true`` or
    ``--require-db``, where that is a failure (scripts/test installs them).
    """
    from tests.conftest import require_db

    reason = patroni_available()
    if reason is not None:
        if require_db(config):
            pytest.fail(f"cannot run a Patroni cluster: {reason}", pytrace=False)
        pytest.skip(f"cannot run a Patroni cluster: {reason}")
    with PatroniCluster(size) as cluster:
        yield cluster
