"""Every code block of README.md and docs/ runs as written (see ``tests/docs/blocks.py``), the
site builds with warnings as errors, and the catalog page lists every registered entry."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.docs.blocks import (
    PAGES,
    ROOT,
    compose_and_check,
    console_sessions,
    matches,
    run_app,
    run_cli,
    shell_plan,
)

sybil = pytest.importorskip("sybil", reason="the docs test needs the docs extra: pip install -e '.[docs]'")
from sybil import Sybil  # noqa: E402
from sybil.parsers.markdown import CodeBlockParser, PythonCodeBlockParser  # noqa: E402


def _yaml(example: Any) -> None:
    from omegaconf import OmegaConf

    from lossmix import LossMix
    from lossmix.app.checks import check_loss_config
    from lossmix.mix.keys import check_term_node
    from lossmix.registry.nodes import is_term_node, to_plain

    node = to_plain(OmegaConf.create(example.parsed))
    if isinstance(node, dict) and isinstance(node.get("loss"), dict):
        check_loss_config(node["loss"])  # checked as the app checks it, then built
        LossMix.from_config(node["loss"])
    elif is_term_node(node):
        check_term_node("term", "term", node)
        LossMix.from_config({"term": node})


def _bash(example: Any) -> None:
    tmp = Path(example.namespace["__tmp__"])
    for command in shell_plan(example.parsed):
        if command.kind == "compose":
            compose_and_check(command.argv, command.cwd)
        elif command.kind == "run":  # from the root: in the page's own directory, out of the tree
            run_cli(command.argv, tmp if command.cwd == ROOT else command.cwd)


def _console(example: Any) -> None:
    tmp = Path(example.namespace["__tmp__"])
    for line, expected in console_sessions(example.parsed):
        argv = line.split("#", 1)[0].split()
        if argv[0] == "lossmix":
            printed = run_cli(argv, tmp)  # what a command writes (calibration.yaml) stays out of the tree
        else:
            printed = run_app(argv, tmp)
        for quoted in expected:
            assert matches(quoted, printed), f"$ {line}\nquoted: {quoted}\nprinted:\n{printed}"


PARSERS = [
    PythonCodeBlockParser(),
    CodeBlockParser("yaml", _yaml),
    CodeBlockParser("bash", _bash),
    CodeBlockParser("console", _console),
]


@pytest.fixture
def restored_registries() -> Any:
    """A page registers its own losses and allows packages: undo both afterwards."""
    import copy

    from lossmix.mix import normalizers
    from lossmix.registry import allowlist
    from lossmix.registry.registry import AGGREGATORS, LOSSES, SAMPLERS, WEIGHTINGS

    registries = (LOSSES, SAMPLERS, WEIGHTINGS, AGGREGATORS)
    saved = [copy.copy(vars(r)) for r in registries]
    saved = [{k: copy.copy(v) for k, v in state.items()} for state in saved]
    allowed = list(allowlist._user_allowed)
    sources, counts = dict(normalizers._SOURCES), set(normalizers._COUNTS)
    yield
    for registry, state in zip(registries, saved, strict=True):
        vars(registry).update(state)
    allowlist._user_allowed[:] = allowed
    normalizers._SOURCES.clear()
    normalizers._SOURCES.update(sources)
    normalizers._COUNTS.clear()
    normalizers._COUNTS.update(counts)


@pytest.mark.usefixtures("restored_registries")
@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_every_block_runs(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The page's blocks, in order, in one namespace, in a fresh working directory: python run,
    yaml loaded, checked and built, bash composed or run, console run and its output compared."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("COLUMNS", "200")  # quoted tables: one line per row
    monkeypatch.syspath_prepend(str(ROOT))
    document = Sybil(PARSERS).parse(page)
    document.namespace["__tmp__"] = str(tmp_path)
    document.namespace["__name__"] = "__docs__"
    for example in document.examples():
        example.evaluate()


def test_readme_is_short() -> None:
    size = (ROOT / "README.md").stat().st_size
    assert size <= 15 * 1024, f"README.md is {size} bytes; move detail into docs/ (the limit is 15 KB)"


def test_catalog_lists_every_entry() -> None:
    from lossmix.app.catalog import CATALOG_SECTIONS, catalog_markdown

    page = catalog_markdown()
    for registry, _, _ in CATALOG_SECTIONS:
        for name in registry.names():
            assert f"### {name}\n" in page, name
    assert "| `pred` | yes |" in page  # inputs with shapes


NO_SPHINX = "needs the docs extra: pip install -e '.[docs]'"


@pytest.mark.skipif(shutil.which("sphinx-build") is None, reason=NO_SPHINX)
def test_site_builds(tmp_path: Path) -> None:
    """``sphinx-build -W``: a broken link, a missing page or API object fails the suite."""
    run = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "docs", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-4000:]
