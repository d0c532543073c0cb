"""``DATABASES`` entries for the poolkeeper Django backends, built from test server URLs."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

#: Django vendor -> the poolkeeper ENGINE (short alias) for it.
ENGINES = {
    "postgresql": "poolkeeper.django.postgresql",
    "mysql": "poolkeeper.django.mysql",
}


def database(vendor: str, url: str, test_name: str, **extra: Any) -> dict[str, Any]:
    """A ``DATABASES`` entry on ``url`` (``postgresql://`` or ``mysql://``).

    ``test_name`` becomes ``TEST["NAME"]``: other test sessions may share the
    server, so every run creates its own test database. ``extra`` overrides
    or adds keys (``OPTIONS``, ``CONN_HEALTH_CHECKS``, ...).
    """
    parts = urlsplit(url)
    entry: dict[str, Any] = {
        "ENGINE": ENGINES[vendor],
        "NAME": parts.path.lstrip("/")
        or ("postgres" if vendor == "postgresql" else ""),
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
        "CONN_MAX_AGE": 0,
        "TEST": {"NAME": test_name},
    }
    entry.update(extra)
    return entry
