"""Which build of poolkeeper runs: compiled (mypyc) or pure Python.

A compiled wheel (``scripts/build-wheels``, or any build with
``POOLKEEPER_COMPILE=1``) carries the hot modules twice: the Python source
and, beside it, an extension module that mypyc compiled from that same
source. The import system prefers the extension. Setting ``POOLKEEPER_PURE=1``
in the environment before poolkeeper is first imported makes every module of
the package load from its source instead (:func:`force_pure`), so the pure
build, the reference, can be run from a compiled install.

:data:`poolkeeper.BUILD` says which one was imported (:func:`build_of`).

May not touch: anything of poolkeeper (every module may import this one).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from mypy_extensions import mypyc_attr
else:

    def mypyc_attr(*_args: Any, **_flags: Any) -> Any:
        """Run pure: mypyc reads this class decorator at compile time only."""
        return lambda cls: cls


__all__ = ["PURE_ENV", "build_of", "force_pure", "mypyc_attr", "pure_requested"]

#: The environment variable that forces the pure-Python modules.
PURE_ENV = "POOLKEEPER_PURE"

_PACKAGE = __name__.rpartition(".")[0]


def pure_requested() -> bool:
    """Whether ``POOLKEEPER_PURE`` asks for the pure-Python modules."""
    return os.environ.get(PURE_ENV, "").strip().lower() not in ("", "0", "false", "no")


class _SourceOnly(importlib.abc.MetaPathFinder):
    """Find poolkeeper's modules as ``.py`` files, never as extension modules."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith(_PACKAGE + ".") or not path:
            return None
        leaf = fullname.rpartition(".")[2]
        for folder in path:
            package = os.path.join(folder, leaf, "__init__.py")
            if os.path.isfile(package):
                return importlib.util.spec_from_file_location(
                    fullname,
                    package,
                    submodule_search_locations=[os.path.join(folder, leaf)],
                )
            module = os.path.join(folder, leaf + ".py")
            if os.path.isfile(module):
                return importlib.util.spec_from_file_location(fullname, module)
        return None


def force_pure() -> None:
    """Load poolkeeper's submodules from source from now on (idempotent).

    Must run before the first compiled module is imported: ``poolkeeper``'s
    ``__init__`` calls it first thing when :func:`pure_requested`.
    """
    if not any(isinstance(finder, _SourceOnly) for finder in sys.meta_path):
        sys.meta_path.insert(0, _SourceOnly())


if pure_requested():
    force_pure()


def build_of(module: ModuleType) -> Literal["compiled", "pure"]:
    """Say whether ``module`` was loaded from an extension module (compiled)."""
    path = getattr(module, "__file__", None) or ""
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    return "compiled" if path.endswith(suffixes) else "pure"
