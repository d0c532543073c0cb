"""Fetch part of a package's source distribution (for the tools that run a
project's own test suite on poolkeeper: Django's, SQLAlchemy's)."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path


def extract_sdist(requirement: str, into: Path, keep: Callable[[str], bool]) -> None:
    """Download the sdist for ``requirement`` with pip and unpack part of it.

    Args:
        requirement: A pinned requirement, ``name==version``.
        into: The directory to unpack into; member paths keep the archive's
            top folder (``name-version/...``).
        keep: Tells, from a member's path in the archive, whether to unpack it.

    Raises:
        subprocess.CalledProcessError: pip could not download the sdist.
    """
    into.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=into) as tmp:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--no-binary",
                ":all:",
                "--dest",
                tmp,
                requirement,
            ],
            check=True,
        )
        (archive,) = Path(tmp).glob("*.tar.gz")
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers() if keep(m.name)]
            if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12 / 3.11.4
                tar.extractall(into, members=members, filter="data")
            else:
                tar.extractall(into, members=members)  # a pinned PyPI sdist
