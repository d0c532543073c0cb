"""Throwaway TLS certificates for tests, made with the ``openssl`` command.

:func:`make_certs` writes a CA, a server certificate it signs that names only
``localhost`` (so connecting to ``127.0.0.1`` with host name checking must
fail), and a second, unrelated CA that clients must not trust. EC P-256 keys
keep generation to a few tens of milliseconds.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Certs", "make_certs", "openssl_available"]


@dataclass(frozen=True)
class Certs:
    """Paths of the PEM files made by :func:`make_certs`."""

    ca: Path
    """The CA that signed the server certificate."""
    server_cert: Path
    """The server certificate: subject and SAN ``localhost`` only."""
    server_key: Path
    other_ca: Path
    """A CA that signed nothing the servers use (the "untrusted CA")."""


def openssl_available() -> str | None:
    """Say why certificates cannot be made here, or None if they can."""
    return None if shutil.which("openssl") else "the openssl command is not installed"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(
        ["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30
    )


def _make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", key.name, "-out", cert.name, "-days", "2",
        "-subj", f"/CN=poolkeeper test {name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip
    return cert, key


def make_certs(directory: Path) -> Certs:
    """Write a CA, a ``localhost`` server certificate and an unrelated CA.

    Raises:
        subprocess.CalledProcessError: openssl failed.
    """
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = _make_ca(directory, "ca")
    other_ca, _ = _make_ca(directory, "other-ca")
    (directory / "server.ext").write_text(
        "subjectAltName=DNS:localhost\n"
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
    )
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=localhost",
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", ca.name, "-CAkey", ca_key.name,
        "-CAcreateserial", "-out", "server.crt", "-days", "2",
        "-extfile", "server.ext",
        cwd=directory,
    )  # fmt: skip
    return Certs(ca, directory / "server.crt", directory / "server.key", other_ca)
