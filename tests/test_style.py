"""The code's own checks run with the suite: ruff (lint and format) and ``mypy --strict``.

CI runs the suite, so a change that breaks typing or formatting fails there, with the
tool's own report. The tools come with the ``dev`` extra.
"""

from __future__ import annotations

import atexit
import importlib.util
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


def _start_mypy() -> subprocess.Popen[str] | None:
    """``mypy --strict lossmix``, started when this module is collected: in a fresh clone (no
    cache) it takes a minute and a half of one core, which it spends beside the other tests."""
    if importlib.util.find_spec("mypy") is None:
        return None
    process = subprocess.Popen(
        [sys.executable, "-m", "mypy", "--strict", "lossmix"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    atexit.register(lambda: process.poll() is None and process.kill())  # a run that deselected it
    return process


MYPY = _start_mypy()


def test_mypy_strict():
    if MYPY is None:
        pytest.skip("mypy is not installed (pip install -e '.[dev]')")
    report, _ = MYPY.communicate(timeout=900)
    assert MYPY.returncode == 0, report
