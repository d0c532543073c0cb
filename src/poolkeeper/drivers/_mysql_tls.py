"""TLS for the MySQL/MariaDB adapters, with one meaning on every driver.

The URL parameters are those of the ``mysql`` command line client:

- ``ssl-mode``: ``DISABLED`` (plain text), ``PREFERRED`` (TLS if the server
  offers it, without checking its certificate), ``REQUIRED`` (TLS or no
  connection; the certificate is not checked), ``VERIFY_CA`` (TLS, and the
  server's certificate must be signed by ``ssl-ca``), ``VERIFY_IDENTITY``
  (``VERIFY_CA``, and the certificate must name the host connected to).
  Case does not matter. Without ``ssl-mode``, ``ssl-ca`` means
  ``VERIFY_CA`` and ``ssl-cert``/``ssl-key`` mean ``REQUIRED``.
- ``ssl-ca``: the CA certificate file (PEM); ``ssl-cert`` and ``ssl-key``:
  a client certificate and its key, always given together.

They are translated per driver: PyMySQL and aiomysql get an
:class:`ssl.SSLContext` built here; mysqlclient gets ``ssl_mode`` and an
``ssl`` dict. The drivers do not all refuse a server without TLS by
themselves (aiomysql and mysqlclient with MariaDB Connector/C fall back to
plain text under ``REQUIRED``), so for ``REQUIRED`` and stricter the adapters
check the new connection and refuse a plain-text one with error 2026
(``CR_SSL_CONNECTION_ERROR``).

Combinations that would silently weaken what was asked are a
:class:`~poolkeeper.ConfigError` naming the parameter: a file with
``DISABLED`` or ``PREFERRED``, ``ssl-ca`` with ``REQUIRED`` (it would not be
checked), ``VERIFY_CA``/``VERIFY_IDENTITY`` without ``ssl-ca``, a
certificate without its key, a file that cannot be read, and these
parameters mixed with a driver's own TLS arguments (``ssl``, ``ssl_ca``,
``ssl_mode``, ...) in the URL or in ``connect_args``.
"""

from __future__ import annotations

import dataclasses
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from poolkeeper._config import URL
from poolkeeper.errors import ConfigError

#: The ``ssl-mode`` values, weakest first.
SSL_MODES = ("DISABLED", "PREFERRED", "REQUIRED", "VERIFY_CA", "VERIFY_IDENTITY")
#: URL parameters read by :meth:`MysqlTls.pop_from`.
TLS_PARAMS = ("ssl-mode", "ssl-ca", "ssl-cert", "ssl-key")
#: MySQL client error: the TLS connection could not be set up.
CR_SSL_CONNECTION_ERROR = 2026
#: Message of the error raised when a server answered without TLS.
PLAIN_TEXT_REFUSED = (
    "TLS/SSL error: ssl-mode={mode} requires TLS but the server does not support it"
)


def _is_driver_tls_arg(key: str) -> bool:
    return key == "ssl" or key.startswith("ssl_")


@dataclass(frozen=True)
class MysqlTls:
    """A validated TLS request from a ``mysql+DRIVER://`` URL."""

    mode: str
    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    @property
    def enforced(self) -> bool:
        """True when a connection without TLS must be refused."""
        return SSL_MODES.index(self.mode) >= SSL_MODES.index("REQUIRED")

    @classmethod
    def pop_from(
        cls, scheme: str, query: dict[str, str], connect_args: Mapping[str, Any]
    ) -> MysqlTls | None:
        """Remove the TLS parameters from ``query`` and validate them.

        Args:
            scheme: The URL scheme, for error messages.
            query: The URL's query parameters (modified in place).
            connect_args: The pool's ``connect_args``, checked for conflicts.

        Returns:
            The TLS request, or None when the URL has none of
            :data:`TLS_PARAMS`.

        Raises:
            ConfigError: an unknown mode or an unsupported combination (see
                the module doc); the message names the parameter.
        """
        given = {k: query.pop(k) for k in TLS_PARAMS if k in query}
        if not given:
            return None
        clash = sorted(k for k in (*query, *connect_args) if _is_driver_tls_arg(k))
        if clash:
            raise ConfigError(
                f"{scheme}:// URL parameter ssl-mode/ssl-ca/ssl-cert/ssl-key cannot be "
                f"mixed with the driver's own TLS arguments {clash}: set TLS one way"
            )
        ca, cert, key = (given.get(f"ssl-{n}") for n in ("ca", "cert", "key"))
        raw = given.get("ssl-mode")
        if raw is None:
            mode = "VERIFY_CA" if ca else "REQUIRED"
        else:
            mode = raw.strip().upper().replace("-", "_")
            if mode not in SSL_MODES:
                raise ConfigError(
                    f"{scheme}:// URL parameter ssl-mode={raw!r} is not valid; "
                    f"expected one of {', '.join(SSL_MODES)}"
                )
        tls = cls(mode, ca, cert, key)
        tls._check(scheme)
        return tls

    def _check(self, scheme: str) -> None:
        files = {"ssl-ca": self.ca, "ssl-cert": self.cert, "ssl-key": self.key}
        named = [name for name, path in files.items() if path]
        if self.mode in ("DISABLED", "PREFERRED") and named:
            raise ConfigError(
                f"{scheme}:// URL parameter {named[0]} needs ssl-mode=REQUIRED, "
                f"VERIFY_CA or VERIFY_IDENTITY, not {self.mode} (which may connect "
                "without TLS)"
            )
        if self.mode == "REQUIRED" and self.ca:
            raise ConfigError(
                f"{scheme}:// URL parameter ssl-ca is not checked under "
                "ssl-mode=REQUIRED; use ssl-mode=VERIFY_CA or VERIFY_IDENTITY"
            )
        if self.mode.startswith("VERIFY") and not self.ca:
            raise ConfigError(
                f"{scheme}:// URL parameter ssl-mode={self.mode} needs ssl-ca (the "
                "CA certificate that signed the server's certificate)"
            )
        if bool(self.cert) != bool(self.key):
            missing = "ssl-key" if self.cert else "ssl-cert"
            raise ConfigError(
                f"{scheme}:// URL parameter {missing} is missing: ssl-cert and "
                "ssl-key go together"
            )
        for name in named:
            path = files[name]
            if path is not None and not os.access(path, os.R_OK):
                raise ConfigError(
                    f"{scheme}:// URL parameter {name}={path!r}: no readable file"
                )

    def context(self) -> ssl.SSLContext | None:
        """Return the SSLContext PyMySQL and aiomysql get, None for no TLS.

        ``PREFERRED`` gets a context that does not check the certificate;
        the driver uses it only when the server offers TLS.
        """
        if self.mode == "DISABLED":
            return None
        if self.mode.startswith("VERIFY"):
            ctx = ssl.create_default_context(cafile=self.ca)
            ctx.check_hostname = self.mode == "VERIFY_IDENTITY"
        else:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.cert and self.key:
            try:
                ctx.load_cert_chain(self.cert, self.key)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(
                    f"ssl-cert/ssl-key: cannot load the client certificate: {exc}"
                ) from None
        return ctx

    def pymysql_args(self) -> dict[str, Any]:
        """Return the TLS arguments for ``pymysql.connect`` / ``aiomysql.connect``."""
        if self.mode == "DISABLED":
            # PyMySQL >= 1.1 tries TLS by default: say no explicitly.
            return {"ssl_disabled": True}
        if self.mode == "PREFERRED":
            return {}
        return {"ssl": self.context()}

    def aiomysql_args(self) -> dict[str, Any]:
        """Return the TLS arguments for ``aiomysql.connect``."""
        return {"ssl": self.context()}

    def mysqlclient_args(self) -> dict[str, Any]:
        """Return the TLS arguments for ``MySQLdb.connect``."""
        files = {"ca": self.ca, "cert": self.cert, "key": self.key}
        args: dict[str, Any] = {"ssl_mode": self.mode}
        present = {k: v for k, v in files.items() if v}
        if present:
            args["ssl"] = present
        return args

    def refusal(self) -> str:
        """The message of the error for a server that answered without TLS."""
        return PLAIN_TEXT_REFUSED.format(mode=self.mode)


def split_tls(url: URL, connect_args: Mapping[str, Any]) -> tuple[URL, MysqlTls | None]:
    """Return ``url`` without its TLS parameters, and the TLS request they make.

    Raises:
        ConfigError: see :meth:`MysqlTls.pop_from`.
    """
    query = dict(url.query)
    tls = MysqlTls.pop_from(url.scheme, query, connect_args)
    if tls is None:
        return url, None
    return dataclasses.replace(url, query=query), tls
