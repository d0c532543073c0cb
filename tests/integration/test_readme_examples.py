"""The README's example and every script in ``examples/`` run as a user runs them.

The README's python block runs verbatim (it names the local PostgreSQL), and
its first install command must install the drivers that block imports. Each
example says in its header how to run it in one command, through an extra
that exists and brings what the example imports; then it runs against the
local server: ``lambda_handler.py`` prints its responses, ``fastapi_app.py``
serves one request on a free loopback port and is stopped by its pid
(issue 16, items 5 and 6).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))

#: What a URL scheme or an import in an example needs installed, by extra name.
DRIVER_EXTRA = {"postgresql://": "psycopg", "postgresql+asyncpg://": "asyncpg"}


def blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, re.MULTILINE | re.DOTALL)


def extras() -> dict[str, list[str]]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        tomllib = pytest.importorskip("tomli")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return dict(project["optional-dependencies"])


def requirements(extra: str) -> set[str]:
    """Every requirement an extra brings, following ``poolkeeper[...]`` ones."""
    table = extras()
    assert extra in table, f"no extra named {extra!r} in pyproject.toml"
    found: set[str] = set()
    for req in table[extra]:
        nested = re.fullmatch(r"poolkeeper\[([\w,-]+)\]", req)
        if nested:
            for name in nested.group(1).split(","):
                found |= requirements(name)
        else:
            found.add(re.split(r"[<>=\[ ;]", req, maxsplit=1)[0].lower())
    return found


def installed_extra(command: str) -> str:
    match = re.search(r"""pip install -e ["']?\.\[([\w,-]+)\]""", command)
    assert match, f"no `pip install -e .[extra]` in: {command}"
    return match.group(1)


def test_readme_first_command_installs_what_the_example_needs() -> None:
    text = README.read_text()
    first = blocks(text, "sh")[0]
    brought: set[str] = set()
    for name in installed_extra(first).split(","):
        brought |= requirements(name)
    example = blocks(text, "python")[0]
    for scheme, extra in DRIVER_EXTRA.items():
        if f'"{scheme}' in example:
            assert requirements(extra) <= brought, (scheme, brought)
    assert {"psycopg", "asyncpg", "rich"} <= brought


def test_readme_example_runs_verbatim(postgres_url: str, tmp_path: Path) -> None:
    example = blocks(README.read_text(), "python")[0]
    script = tmp_path / "readme_example.py"
    script.write_text(example)
    proc = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "(1,)"  # psycopg's row
    assert lines[1].startswith("PoolStats(")
    assert lines[-1] == "1"  # asyncpg's fetchval


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_header_says_how_to_run_it(path: Path) -> None:
    header = path.read_text().split('"""')[1]
    commands = [ln.strip() for ln in header.splitlines() if "pip install" in ln]
    assert len(commands) == 1, header
    command = commands[0]
    assert f"python examples/{path.name}" in command
    brought: set[str] = set()
    for name in installed_extra(command).split(","):
        brought |= requirements(name)
    imports = set(re.findall(r"^\s*(?:from|import) (\w+)", path.read_text(), re.M))
    third_party = imports - set(sys.stdlib_module_names) - {"poolkeeper", "__future__"}
    assert third_party <= brought, (third_party, brought)
    for scheme, extra in DRIVER_EXTRA.items():
        if f'"{scheme}' in path.read_text():
            assert requirements(extra) <= brought, (scheme, brought)


def with_scheme(url: str, scheme: str) -> str:
    return urlunsplit((scheme, *urlsplit(url)[1:]))


def run_example(name: str, *args: str, env: dict[str, str]) -> str:
    proc = subprocess.run(
        [sys.executable, f"examples/{name}", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, **env},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_lambda_handler_run_directly_prints_its_responses(postgres_url: str) -> None:
    out = run_example(
        "lambda_handler.py",
        "Ada",
        env={"DATABASE_URL": with_scheme(postgres_url, "postgresql")},
    )
    responses = [json.loads(ln) for ln in out.splitlines() if ln.startswith("{")]
    assert len(responses) == 3
    assert all(r["statusCode"] == 200 and r["body"] == "hello Ada" for r in responses)
    assert len({r["backend_pid"] for r in responses}) == 1  # one warm connection
    assert "3 invocations, 1 cold start" in out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_fastapi_app_serves_one_request(postgres_url: str, tmp_path: Path) -> None:
    port = free_port()
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "examples/fastapi_app.py", "--port", str(port)],
        cwd=ROOT,
        env={
            **os.environ,
            "DATABASE_URL": with_scheme(postgres_url, "postgresql+asyncpg"),
        },
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        body = None
        while body is None:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            assert time.monotonic() < deadline, "the app did not start within 30 s"
            try:
                url = f"http://127.0.0.1:{port}/double/21"
                with urllib.request.urlopen(url, timeout=5) as response:
                    body = json.loads(response.read())
            except OSError:
                time.sleep(0.1)
        assert body == {"n": 21, "double": 42}
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGINT)  # uvicorn shuts down on Ctrl-C
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()
    assert "Application shutdown complete" in (tmp_path / "server.log").read_text()


def _run(
    cmd: list[str], timeout: float, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, check=False, cwd=cwd
    )


@pytest.mark.slow
def test_readme_example_runs_from_the_wheel_in_a_fresh_venv(
    postgres_url: str, tmp_path: Path
) -> None:
    # What a new user does: the package with its quickstart extra in a venv
    # of its own (here from the wheel, with its dependencies from the index),
    # then the README's first python block, verbatim, outside the source tree.
    built = _run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--outdir",
            str(tmp_path / "dist"),
            str(ROOT),
        ],
        timeout=180,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (tmp_path / "dist").glob("poolkeeper-*.whl")
    venv = tmp_path / "venv"
    made = _run([sys.executable, "-m", "venv", str(venv)], timeout=120)
    assert made.returncode == 0, made.stderr
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--quiet"]
    # The index (pip's own configuration) must answer; without it only CI fails.
    probe = _run(
        [*pip, "download", "--no-deps", "--dest", str(tmp_path / "probe"), "asyncpg"],
        timeout=60,
    )
    if probe.returncode != 0 and not os.environ.get("CI"):
        pytest.skip(f"the package index is unreachable: {probe.stderr.strip()[-300:]}")
    assert probe.returncode == 0, probe.stderr
    installed = _run([*pip, "install", f"{wheel}[quickstart]"], timeout=180)
    assert installed.returncode == 0, installed.stderr
    script = tmp_path / "readme_example.py"
    script.write_text(blocks(README.read_text(), "python")[0])
    proc = _run([str(venv / "bin" / "python"), str(script)], timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "(1,)"  # psycopg's row
    assert lines[1].startswith("PoolStats(")
    assert lines[-1] == "1"  # asyncpg's fetchval
    where = _run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import poolkeeper; print(poolkeeper.__file__)",
        ],
        timeout=30,
        cwd=tmp_path,
    )
    assert str(venv) in where.stdout  # the wheel's copy, not the source tree
