"""The documentation keeps its promises: references resolve, the API is documented.

``mkdocs build --strict`` (scripts/test) checks links between pages and fails
on a public name without a docstring through tools/mkdocs_hooks.py; these
tests check the same hook quickly, and the references to docs sections that
live in docstrings and comments, which mkdocs does not see.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import types
from collections.abc import Callable
from pathlib import Path

import pytest

import poolkeeper

ROOT = Path(__file__).resolve().parents[2]
API = ROOT / "docs" / "api.md"


def _load_hook() -> Callable[[str], list[str]]:
    # tools/ is not a package: load the hook file the way mkdocs does.
    spec = importlib.util.spec_from_file_location(
        "pk_mkdocs_hooks", ROOT / "tools" / "mkdocs_hooks.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    check: Callable[[str], list[str]] = module.missing_docstrings
    return check


missing_docstrings = _load_hook()


def headings(doc: Path) -> set[str]:
    return {
        m.group(1).strip()
        for m in re.finditer(r"^#+ (.+)$", doc.read_text(), re.MULTILINE)
    }


def test_section_references_in_the_source_exist() -> None:
    pattern = re.compile(
        r"""(?:docs/(\w+\.md),\s+"([^"]+)"|"([^"]+)"\s+section\s+of\s+docs/(\w+\.md))"""
    )
    seen = 0
    for path in (ROOT / "src").rglob("*.py"):
        text = " ".join(path.read_text().split())  # references may wrap lines
        for match in pattern.finditer(text):
            doc = match.group(1) or match.group(4)
            section = match.group(2) or match.group(3)
            assert section in headings(ROOT / "docs" / doc), (path, doc, section)
            seen += 1
    assert seen >= 3  # the compat modules refer to "Drop-in compatibility"


@pytest.mark.parametrize(
    "name", re.findall(r"^:::\s+([\w.]+)\s*$", API.read_text(), re.MULTILINE)
)
@pytest.mark.skipif(
    poolkeeper.BUILD == "compiled",
    reason="the docs are built from the source; mypyc keeps not every docstring",
)
def test_documented_api_has_docstrings(name: str) -> None:
    assert missing_docstrings(name) == []


def test_the_hook_reports_a_missing_docstring(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("pk_fake_api", "A module.")

    class Documented:
        """A class."""

        def method(self) -> None:
            """A method."""

        def bare(self) -> None:
            pass

        @property
        def prop(self) -> int:
            return 1

    def function() -> None:
        pass

    for obj in (Documented, function):
        obj.__module__ = module.__name__
        setattr(module, obj.__name__, obj)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    assert missing_docstrings("pk_fake_api") == [
        "pk_fake_api.Documented.bare",
        "pk_fake_api.Documented.prop",
        "pk_fake_api.function",
    ]
