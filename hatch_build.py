"""Build hook: compile poolkeeper's hot modules with mypyc when asked to.

Without ``POOLKEEPER_COMPILE=1`` in the environment this hook does nothing and
the wheel is pure Python (``py3-none-any``): ``pip install poolkeeper`` from
the sdist and ``pip install -e .`` never need a compiler.

With ``POOLKEEPER_COMPILE=1`` (``scripts/build-wheels`` sets it) a regular
wheel build also asks for mypy (mypyc) and setuptools in the isolated build
environment, compiles the modules in :data:`COMPILED` from the same typed
source, and puts the extension modules in the wheel beside the ``.py`` files,
which it keeps: ``POOLKEEPER_PURE=1`` loads those instead (see
``src/poolkeeper/_build.py``). The wheel is then tagged for the interpreter
and platform that built it.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

#: The compiled modules, under src/: the core, the thread pool's shell
#: (every mixin of Pool) and the psycopg/psycopg2 idle probes that every
#: return runs (plain functions; the adapters' classes stay Python). Pool itself (pool.py) stays Python: mypyc cannot
#: compile its overloaded __init__. So does persistent.py: its pins need weak
#: references, which mypyc's native classes do not take. Package __init__
#: files gain nothing.
COMPILED = (
    "poolkeeper/_core/base.py",
    "poolkeeper/_core/checkout.py",
    "poolkeeper/_core/connect_errors.py",
    "poolkeeper/_core/connecting.py",
    "poolkeeper/_core/entry.py",
    "poolkeeper/_core/events.py",
    "poolkeeper/_core/policy.py",
    "poolkeeper/_core/state.py",
    "poolkeeper/_core/stats.py",
    "poolkeeper/_core/upkeep.py",
    "poolkeeper/_sync/base.py",
    "poolkeeper/_sync/checkin.py",
    "poolkeeper/_sync/checkout.py",
    "poolkeeper/_sync/connecting.py",
    "poolkeeper/_sync/housekeeping.py",
    "poolkeeper/_sync/lifecycle.py",
    "poolkeeper/_sync/recovery.py",
    "poolkeeper/_sync/validation.py",
    "poolkeeper/drivers/_probes.py",
)

#: What a compiling build installs in its isolated environment (the mypy
#: release the project type-checks with: mypyc compiles what mypy accepts).
COMPILE_REQUIRES = ["mypy==2.4.1", "setuptools>=70"]

ENV = "POOLKEEPER_COMPILE"


def compile_requested() -> bool:
    """Whether ``POOLKEEPER_COMPILE`` asks for a compiled build."""
    return os.environ.get(ENV, "").strip().lower() not in ("", "0", "false", "no")


class MypycBuildHook(BuildHookInterface):
    """Compile :data:`COMPILED` with mypyc into the wheel (opt-in)."""

    PLUGIN_NAME = "custom"

    def dependencies(self) -> list[str]:
        return list(COMPILE_REQUIRES) if compile_requested() else []

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if version != "standard" or not compile_requested():
            return
        src = Path(self.root) / "src"
        work = Path(tempfile.mkdtemp(prefix="poolkeeper-mypyc-"))
        try:
            built = _compile(src, work)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        self._work = work
        for path in built:
            relative = path.relative_to(work / "lib").as_posix()
            build_data["force_include"][str(path)] = relative
        self.app.display_info(
            f"poolkeeper: compiled {len(COMPILED)} modules with mypyc"
        )
        build_data["pure_python"] = False
        build_data["infer_tag"] = True

    def finalize(
        self, version: str, build_data: dict[str, Any], artifact_path: str
    ) -> None:
        work = getattr(self, "_work", None)
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)


def _compile(src: Path, work: Path) -> list[Path]:
    """Run mypyc and the C compiler; return the extension modules built."""
    from mypyc.build import mypycify
    from setuptools import Distribution

    config = src.parent / "pyproject.toml"
    cwd = os.getcwd()
    # mypy names modules after their path: run from src/ so that
    # poolkeeper/_core/state.py is poolkeeper._core.state.
    os.chdir(src)
    options = ["--config-file", str(config), "--cache-dir", str(work / "mypy_cache")]
    # The drivers' packages are not in the build environment.
    options.append("--ignore-missing-imports")
    try:
        extensions = mypycify(
            [*options, *COMPILED],
            opt_level="3",
            target_dir=str(work / "c"),
            group_name="poolkeeper",
        )
        _patch_weaklist(work / "c")
        dist = Distribution({"name": "poolkeeper", "ext_modules": extensions})
        command: Any = dist.get_command_obj("build_ext")
        command.build_lib = str(work / "lib")
        command.build_temp = str(work / "tmp")
        command.parallel = os.cpu_count() or 1
        command.ensure_finalized()
        command.run()
    finally:
        os.chdir(cwd)
    built = sorted((work / "lib").rglob("*.so")) + sorted((work / "lib").rglob("*.pyd"))
    if not built:
        raise RuntimeError("mypyc built no extension module")
    return built


# The weak-reference list of a native class instance that has a __dict__ (a
# generic class: Generic[...] is a Python base), before Python 3.12: mypyc
# 2.4's tp_traverse visits it and its tp_clear, which the deallocator runs,
# Py_CLEARs it as if it owned the first weak reference. A weakref.ref or
# WeakSet entry of a Pool then outlives the pool and crashes the interpreter.
# The list holds borrowed references: do not visit it, and clear it the way
# CPython's own deallocator does.
_WEAKLIST = r"\*\(\(PyObject \*\*\)\(\(char \*\)self \+ sizeof\(PyObject \*\) \+ sizeof\((\w+)\)\)\)"
_VISIT = re.compile(r"Py_VISIT\(" + _WEAKLIST + r"\);")
_CLEAR = re.compile(r"Py_CLEAR\(" + _WEAKLIST + r"\);")


def _patch_weaklist(c_dir: Path) -> int:
    """Fix the weak-reference list handling in mypyc's C output (see above)."""
    patched = 0
    for path in c_dir.rglob("*.c"):
        text = path.read_text()
        text, visits = _VISIT.subn("/* weak list: borrowed references */", text)
        text, clears = _CLEAR.subn(
            lambda m: (
                "if (*((PyObject **)((char *)self + sizeof(PyObject *) + "
                f"sizeof({m.group(1)}))) != NULL) "
                "PyObject_ClearWeakRefs((PyObject *)self);"
            ),
            text,
        )
        if visits or clears:
            path.write_text(text)
            patched += visits + clears
    return patched
