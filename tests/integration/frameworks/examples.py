"""Load the scripts in ``examples/`` as fresh modules (a new import = a cold start)."""

from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path
from types import ModuleType

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
_counter = itertools.count()


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` under a new module name and return it."""
    spec = importlib.util.spec_from_file_location(
        f"pk_example_{name}_{next(_counter)}", EXAMPLES / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
