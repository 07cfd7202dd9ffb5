"""The code's own checks run with the suite: ruff (lint and format) and ``mypy --strict``.

CI runs the suite, so a change that breaks typing or formatting fails there, with the
tool's own report. The tools come with the ``dev`` extra.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
SOURCES = ["lossmix", "tests", "benchmarks", "examples"]


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[dev]')")
    return found


def test_ruff_lint():
    done = _run(_tool("ruff"), "check", *SOURCES)
    assert done.returncode == 0, done.stdout + done.stderr


def test_ruff_format():
    done = _run(_tool("ruff"), "format", "--check", *SOURCES)
    assert done.returncode == 0, "run `ruff format`:\n" + done.stdout + done.stderr


def test_mypy_strict():
    done = _run(sys.executable, "-m", "mypy", "--strict", "lossmix")
    assert done.returncode == 0, done.stdout + done.stderr
