"""MkDocs hook: fail ``mkdocs build --strict`` when public API lacks a docstring.

mkdocstrings renders what the docstrings say and stays silent about what is
missing. This hook walks every object that ``docs/api.md`` documents (its
``::: dotted.name`` lines), and for each public class, function, method and
property reached from it without a docstring logs a warning, which strict
mode turns into a failed build.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import re
from pathlib import Path
from typing import Any

log = logging.getLogger("mkdocs.hooks.poolkeeper")

_DIRECTIVE = re.compile(r"^:::\s+([\w.]+)\s*$", re.MULTILINE)


def on_pre_build(config: Any) -> None:
    """Check the docstrings before the pages are built."""
    api = Path(config["docs_dir"]) / "api.md"
    for name in _DIRECTIVE.findall(api.read_text(encoding="utf-8")):
        for problem in missing_docstrings(name):
            log.warning("missing docstring: %s", problem)


def missing_docstrings(dotted: str) -> list[str]:
    """Return the public names under ``dotted`` that have no docstring."""
    obj = _resolve(dotted)
    problems: list[str] = []
    if inspect.ismodule(obj):
        if not inspect.getdoc(obj):
            problems.append(dotted)
        for name, member in _public_members(obj):
            if getattr(member, "__module__", None) == obj.__name__:
                problems += _check(f"{dotted}.{name}", member)
    else:
        problems += _check(dotted, obj)
    return problems


def _check(path: str, obj: Any) -> list[str]:
    if not (inspect.isclass(obj) or inspect.isfunction(obj)):
        return []
    problems = [] if obj.__doc__ else [path]
    if inspect.isclass(obj):
        for name, member in vars(obj).items():
            if name.startswith("_"):
                continue
            target = member.fget if isinstance(member, property) else member
            if isinstance(target, (staticmethod, classmethod)):
                target = target.__func__
            if inspect.isfunction(target) and not target.__doc__:
                problems.append(f"{path}.{name}")
    return problems


def _public_members(module: Any) -> list[tuple[str, Any]]:
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n in vars(module) if not n.startswith("_")]
    return [(n, getattr(module, n)) for n in names if hasattr(module, n)]


def _resolve(dotted: str) -> Any:
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attr in parts[split:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)
