"""The pool's options are defined once (``poolkeeper.PoolOptions``): mypy
rejects a misspelt one, the runtime names the right one, README's table is
generated from the definition."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import poolkeeper
from poolkeeper._config import PoolConfig
from poolkeeper._options import OPTION_NAMES, option_default, split_options

ROOT = Path(__file__).resolve().parents[2]

SNIPPET = """\
from poolkeeper import AsyncPool, PersistentPool, Pool

Pool("sqlite:///:memory:", max_szie=5)
AsyncPool("sqlite+aiosqlite:///:memory:", timout=1.0)
PersistentPool("sqlite:///:memory:", min_size="2")
Pool("sqlite:///:memory:", max_size=5, validate="idle", fair=False)
"""


def _mypy(tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "snippet.py"
    path.write_text(source)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-error-summary",
            "--cache-dir",
            str(tmp_path / "cache"),
            str(path),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=110,
        check=False,
    )


@pytest.mark.timeout(120)
def test_mypy_rejects_misspelt_and_mistyped_options(tmp_path: Path) -> None:
    result = _mypy(tmp_path, SNIPPET)
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    lines = sorted({int(line.split(":")[1]) for line in errors})
    assert lines == [3, 4, 5], result.stdout
    assert '"max_szie"' in result.stdout
    assert '"timout"' in result.stdout


def test_every_option_is_a_constructor_keyword() -> None:
    # Each option works at runtime, and PoolConfig holds only options (plus
    # its internal lifetime_jitter).
    config, rest = split_options(
        "Pool", {name: option_default(name) for name in OPTION_NAMES}
    )
    assert config == PoolConfig()
    assert set(rest) == {"connect_args", "configure", "reset", "check", "name"}
    internal = set(PoolConfig.__dataclass_fields__) - set(OPTION_NAMES)
    assert internal == {"lifetime_jitter"}
    assert poolkeeper.PoolOptions.__annotations__.keys() == set(OPTION_NAMES)


def test_unknown_option_is_a_type_error_naming_the_right_one() -> None:
    with pytest.raises(TypeError, match="'max_szie': did you mean 'max_size'"):
        split_options("Pool", {"max_szie": 5})


def test_readme_options_table_is_current() -> None:
    result = subprocess.run(
        [sys.executable, "tools/gen_options_doc.py", "--check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
