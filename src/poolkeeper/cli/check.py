"""``poolkeeper check URL``: diagnose a connection setup step by step.

Each layer is checked in order (URL, name resolution, TCP, TLS, connect and
authentication, server facts, round trip) and reported as one line: ``ok``,
``warn``, ``skip`` or ``FAIL``, with a fix hint under every failure or
warning. A failing layer stops the layers that depend on it. Passwords are
never printed: the URL is shown redacted and any driver message is scrubbed.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
from dataclasses import dataclass
from typing import Any, ClassVar

from poolkeeper.cli._common import (
    EXIT_CONNECT,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    Output,
    Target,
    default_port,
    first_line,
    ms,
    resolve_target,
)
from poolkeeper.cli._fixes import connect_fix, root_cause
from poolkeeper.cli._probe import (
    ServerProbe,
    pg_tls,
    probe_server,
    resolve,
    tcp_connect,
)
from poolkeeper.cli._server import as_int, scalar

EXAMPLES = """\
examples:
  poolkeeper check postgresql://postgres@127.0.0.1:5432/test
  poolkeeper check "postgresql://app:secret@db.example.com/app?sslmode=require"
  poolkeeper check postgresql+asyncpg://postgres@127.0.0.1/test --timeout 2
  poolkeeper check sqlite:///var/lib/app/app.db

exit codes: 0 all good (warnings allowed), 1 a check failed, 2 bad URL,
3 cannot connect (DNS, TCP or authentication failed).
"""

PG_QUERIES = (
    "SHOW server_version",
    "SHOW max_connections",
    "SHOW superuser_reserved_connections",
    "SELECT current_setting('reserved_connections', true)",
    "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'",
    "SELECT inet_server_port()",
    "SHOW ssl",
)
SQLITE_QUERIES = ("SELECT sqlite_version()", "PRAGMA journal_mode")
#: Share of usable server connections in use above which ``check`` warns.
BUSY = 0.8


def add_parser(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Register the ``check`` sub-command."""
    parser = subparsers.add_parser(
        "check",
        parents=parents,
        help="diagnose a database URL step by step",
        description=(
            "Check a database URL layer by layer: URL, DNS, TCP connect, TLS, "
            "authentication, server version, max_connections and current use "
            "(PostgreSQL), round-trip time, and whether a PgBouncer sits in "
            "front. Each failure comes with what to fix."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("url", help="the database URL to check")
    parser.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="network timeout per step (default: 5)",
    )
    parser.add_argument(
        "--round-trips",
        type=int,
        default=20,
        metavar="N",
        help="SELECT 1 round trips to time (default: 20)",
    )
    parser.set_defaults(func=command)


@dataclass(frozen=True)
class Step:
    """One line of the report."""

    name: str
    status: str
    detail: str
    fix: str | None = None


class Report:
    """Collects steps, prints each as it completes, and computes the exit code."""

    MARKS: ClassVar[dict[str, str]] = {
        "ok": "[ ok ]",
        "warn": "[warn]",
        "skip": "[skip]",
        "fail": "[FAIL]",
    }

    def __init__(self, out: Output, secret: str | None, debug: bool = False) -> None:
        self.out = out
        self.secret = secret
        #: Show driver errors whole (``--debug``), not only their first line.
        self.debug = debug
        self.steps: list[Step] = []
        self.code = EXIT_OK

    def add(
        self,
        name: str,
        status: str,
        detail: str,
        fix: str | None = None,
        *,
        code: int = EXIT_FAILED,
    ) -> None:
        """Record and print a step; a failure sets the exit code (first one wins)."""
        step = Step(
            name, status, self._scrub(detail), self._scrub(fix) if fix else None
        )
        self.steps.append(step)
        self.out.print(f"{self.MARKS[status]} {name:<13} {step.detail}")
        if step.fix:
            self.out.print(f"{'':>7}{'':<13} fix: {step.fix}")
        if status == "fail" and self.code == EXIT_OK:
            self.code = code

    def _scrub(self, text: str) -> str:
        from poolkeeper._config import scrub

        return scrub(text, (self.secret,)) if self.secret else text


def command(args: argparse.Namespace) -> int:
    """Run ``poolkeeper check``; return the exit code."""
    out = Output(progress=False)
    secret = _password(args.url)
    report = Report(out, secret, debug=bool(getattr(args, "debug", False)))
    target = _url_step(report, args.url)
    if target is None:
        return report.code
    if target.is_sqlite:
        _sqlite_steps(report, target)
    else:
        _network_steps(report, target, args.timeout, max(0, args.round_trips))
    failed = [s.name for s in report.steps if s.status == "fail"]
    out.print()
    out.print(
        "result: "
        + (f"failed at {', '.join(failed)}" if failed else "all checks passed")
    )
    return report.code


def _password(url: str) -> str | None:
    from poolkeeper._config import parse_url

    try:
        return parse_url(url).password or None
    except Exception:
        return None


def _url_step(report: Report, url: str) -> Target | None:
    try:
        target = resolve_target(url, use_async=False)
    except CliError as exc:
        report.add(
            "URL",
            "fail",
            exc.problem.removeprefix("bad URL: "),
            exc.fix
            or "write it as dialect[+driver]://user[:password]@host[:port]/database, "
            "e.g. postgresql://postgres@127.0.0.1:5432/test",
            code=EXIT_USAGE,
        )
        return None
    report.add("URL", "ok", f"{target.display} (driver {target.driver_name})")
    return target


def _sqlite_steps(report: Report, target: Target) -> None:
    path = target.parsed.database or ":memory:"
    if path != ":memory:" and not path.startswith("file:"):
        directory = os.path.dirname(os.path.abspath(path))
        if os.path.exists(path):
            report.add("file", "ok", f"{path} exists ({os.path.getsize(path):,} bytes)")
        elif os.access(directory, os.W_OK):
            report.add(
                "file",
                "warn",
                f"{path} does not exist; connecting will create it",
                "check the path if you expected an existing database",
            )
        else:
            report.add(
                "file",
                "fail",
                f"{path} does not exist and {directory} is not writable",
                "fix the path (sqlite:////absolute/path.db has four slashes)",
                code=EXIT_CONNECT,
            )
            return
    probe = _connect_step(report, target, SQLITE_QUERIES)
    if probe is None:
        return
    version, journal = (scalar(rows) for rows in probe.rows)
    report.add("server", "ok", f"SQLite {version}, journal_mode={journal}")
    _rtt_step(report, probe)


def _network_steps(
    report: Report, target: Target, timeout: float, round_trips: int
) -> None:
    parsed = target.parsed
    port = parsed.port or default_port(parsed.dialect)
    host = parsed.host
    if host is None or host.startswith("/"):
        socket_dir = host or "/var/run/postgresql"
        path = os.path.join(socket_dir, f".s.PGSQL.{port}")
        if os.path.exists(path):
            report.add("socket", "ok", f"Unix socket {path} exists")
        else:
            report.add(
                "socket",
                "fail",
                f"no Unix socket at {path}",
                "start the server, or give a host in the URL (postgresql://user@127.0.0.1/db)",
                code=EXIT_CONNECT,
            )
            return
    else:
        if not _dns_and_tcp(report, host, port, timeout):
            return
        if target.is_postgres:
            _tls_step(report, target, host, port, timeout)
        else:
            report.add("TLS", "skip", f"not checked for {parsed.dialect}")
    queries = PG_QUERIES if target.is_postgres else ()
    probe = _connect_step(report, target, queries, round_trips)
    if probe is None:
        return
    if target.is_postgres:
        _pg_facts(report, probe, port if host and not host.startswith("/") else None)
    _rtt_step(report, probe)


def _dns_and_tcp(report: Report, host: str, port: int, timeout: float) -> bool:
    try:
        addresses, took = resolve(host, port)
    except OSError as exc:
        report.add(
            "DNS",
            "fail",
            f"cannot resolve {host!r}: {exc}",
            "check the host name for typos, and that this machine's DNS can see it",
            code=EXIT_CONNECT,
        )
        return False
    report.add("DNS", "ok", f"{host} -> {', '.join(addresses[:3])} ({ms(took)})")
    try:
        took = tcp_connect(host, port, timeout)
    except TimeoutError:
        report.add(
            "TCP connect",
            "fail",
            f"{host}:{port}: no answer within {timeout:g} s",
            "a firewall or security group drops the traffic, or the host is wrong",
            code=EXIT_CONNECT,
        )
        return False
    except OSError as exc:
        report.add(
            "TCP connect",
            "fail",
            f"{host}:{port}: {exc.strerror or exc}",
            connect_fix("connection refused"),
            code=EXIT_CONNECT,
        )
        return False
    report.add("TCP connect", "ok", f"{host}:{port} in {ms(took)}")
    return True


def _tls_step(
    report: Report, target: Target, host: str, port: int, timeout: float
) -> None:
    sslmode = target.parsed.query.get("sslmode", "prefer")
    try:
        info = pg_tls(host, port, timeout, verify=sslmode == "verify-full")
    except OSError as exc:
        report.add(
            "TLS",
            "fail",
            f"TLS negotiation failed: {exc}",
            "check the server's ssl settings and certificates",
        )
        return
    if info.verify_error:
        report.add(
            "TLS",
            "fail",
            f"certificate not trusted: {info.verify_error}",
            "install the server's CA certificate (sslrootcert=...) or use sslmode=require",
        )
    elif info.offered:
        report.add(
            "TLS",
            "ok",
            f"{info.version} {info.cipher} (handshake {ms(info.handshake_s or 0.0)}, sslmode={sslmode})",
        )
    elif sslmode in ("require", "verify-ca", "verify-full"):
        report.add(
            "TLS",
            "fail",
            f"the server does not offer TLS but sslmode={sslmode}",
            "enable ssl on the server (ssl = on in postgresql.conf) or relax sslmode",
        )
    elif _is_loopback(host):
        report.add(
            "TLS",
            "skip",
            f"not offered by the server (fine on loopback; sslmode={sslmode})",
        )
    else:
        report.add(
            "TLS",
            "warn",
            "not offered by the server: traffic and passwords cross the network unencrypted",
            "enable ssl on the server and use sslmode=require (or verify-full)",
        )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _connect_step(
    report: Report, target: Target, queries: tuple[str, ...], round_trips: int = 20
) -> ServerProbe | None:
    try:
        probe = probe_server(target, queries, round_trips)
    except Exception as raised:
        exc = root_cause(raised)
        if report.debug:
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
            detail = " / ".join([type(exc).__name__, *lines])
            fix = connect_fix(str(exc), default="")
        else:
            detail, fix = first_line(exc), connect_fix(str(exc))
        report.add("connect", "fail", detail, fix or None, code=EXIT_CONNECT)
        return None
    user = target.parsed.username
    who = f" as {user}" if user else ""
    report.add(
        "connect",
        "ok",
        f"authenticated{who} in {ms(probe.connect_s)} (driver {target.driver_name})",
    )
    return probe


def _pg_facts(report: Report, probe: ServerProbe, dialed_port: int | None) -> None:
    def get(i: int) -> Any:
        return scalar(probe.rows[i]) if i < len(probe.rows) else None

    version = get(0)
    report.add(
        "server", "ok", f"PostgreSQL {version}" + (f", ssl={get(6)}" if get(6) else "")
    )
    max_conn = as_int(get(1))
    reserved = (as_int(get(2)) or 0) + (as_int(get(3)) or 0)
    in_use = as_int(get(4))
    if max_conn is None or in_use is None:
        report.add(
            "connections", "skip", "max_connections or pg_stat_activity not readable"
        )
    else:
        usable = max(1, max_conn - reserved)
        detail = f"{in_use} of {usable} in use (max_connections={max_conn}, {reserved} reserved)"
        if in_use >= BUSY * usable:
            report.add(
                "connections",
                "warn",
                detail,
                "close idle sessions, shrink pools, or raise max_connections / add PgBouncer",
            )
        else:
            report.add("connections", "ok", detail)
    server_port = as_int(get(5))
    if dialed_port is None or server_port is None:
        report.add("PgBouncer", "skip", "cannot tell over a Unix socket")
    elif server_port != dialed_port:
        report.add(
            "PgBouncer",
            "warn",
            f"a proxy answers on port {dialed_port} but PostgreSQL listens on {server_port}: probably PgBouncer",
            "in transaction mode use the PgBouncer preset (no session state, no server-side prepared statements), or a null pool",
        )
    else:
        report.add(
            "PgBouncer",
            "ok",
            f"none detected (server listens on the port dialled, {dialed_port})",
        )


def _rtt_step(report: Report, probe: ServerProbe) -> None:
    if not probe.round_trips:
        report.add("round trip", "skip", "not measured")
        return
    fastest = min(probe.round_trips)
    detail = f"SELECT 1: median {ms(probe.rtt_median)}, min {ms(fastest)} over {len(probe.round_trips)}"
    if probe.rtt_median > 0.02:
        report.add(
            "round trip",
            "warn",
            detail,
            "over 20 ms per query: run the application closer to the database, and batch queries",
        )
    else:
        report.add("round trip", "ok", detail)
