"""How the docs test runs each code block of README.md and docs/*.md (Sybil parses them).

* ```python: executed as written, in order, one namespace per page, in a fresh working
  directory (Sybil's ``PythonCodeBlockParser``);
* ```yaml: loaded (OmegaConf, YAML 1.1 as Hydra reads it); a block with a ``loss`` node or a
  term node is checked against the term schema, as the app checks it before training, and
  built (``LossMix.from_config``);
* ```bash: each command (``\\`` continuations joined, ``&&`` chains split, comments dropped)
  is composed (``python -m lossmix.train ...``: Hydra's compose API with lossmix's checks, a
  sweep by its first value), run (``lossmix list|show ...``) or skipped with the reason
  (set-up commands CI runs, example scripts another test runs, benchmarks); any other command
  fails the test, so every line is accounted for;
* ```console: ``$ command`` lines followed by the output the page quotes; the command is run
  in-process and the quoted lines (``...`` matches anything) must appear in what it prints;
* ```text and unlabelled fences: shown, not run.

``python -m tests.docs.blocks`` prints how many blocks each kind has (run, composed, skipped).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import runpy
import shlex
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGES: list[Path] = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TRAIN = ("python -m lossmix.train", "lossmix-train")
SKIPPED: dict[str, str] = {
    "pip": "installs packages: the set-up commands CI runs (.ci/run)",
    "python -m venv": "creates the environment: the set-up commands CI runs (.ci/run)",
    ".": "activates the environment: the set-up commands CI runs (.ci/run)",
    "bash .ci/run": "CI itself",
    "python -m pytest": "the test suite itself (.ci/run)",
    "ruff": "run inside the suite by tests/test_style.py",
    "mypy": "run inside the suite by tests/test_style.py",
    "sphinx-build": "run by tests/docs/test_docs.py::test_site_builds",
    "python -m benchmarks.": "a benchmark (minutes): its figures are in benchmarks/RESULTS.md",
    "python benchmarks/": "a benchmark (minutes): its figures are in benchmarks/RESULTS.md",
    "export": "sets a shell variable",
    "open": "opens the built site in a browser",
}


@dataclass
class Command:
    """One shell command of a page: what the test does with it, and why."""

    kind: str  # "compose" | "run" | "skip"
    argv: list[str]
    cwd: Path
    reason: str = ""


def commands(text: str) -> Iterator[list[str]]:
    """The commands of a shell block: continuations joined, ``&&`` split, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        while words:
            cut = words.index("&&") if "&&" in words else len(words)
            if words[:cut]:
                yield words[:cut]
            words = words[cut + 1 :]


def _tested_by(script: str) -> str | None:
    """The test file that runs an example script (its path or name appears there)."""
    path = Path(script)
    key = path.stem if path.parent.name == "examples" else path.parent.name  # examples/own_app/...
    tests = sorted((ROOT / "tests").rglob("test_*.py"))
    texts = {test: test.read_text(encoding="utf-8") for test in tests}
    # the strongest evidence first: the path itself, an import of the script, its folder's name
    for name in (path.as_posix(), f"import {key}\n", f"{key}.py", f'"{key}"'):
        for test, text in texts.items():
            if name in text:
                return test.relative_to(ROOT).as_posix()
    return None


def classify(argv: list[str], cwd: Path) -> Command:
    """What the docs test does with one command (``cd`` changes the folder of the next)."""
    line = " ".join(argv)
    if line.startswith(TRAIN):
        return Command("compose", argv, cwd)
    if argv[0] == "lossmix":
        return Command("run", argv, cwd)
    if argv[0] == "cd":
        return Command("cd", argv, cwd / argv[1])
    if argv[0] == "python" and len(argv) > 1 and argv[1].startswith("examples/"):
        test = _tested_by(argv[1])
        if test is None:
            raise AssertionError(f"{line}: no test runs {argv[1]}; add one, or do not show it")
        return Command("skip", argv, cwd, f"an example script, run by {test}")
    for prefix, reason in SKIPPED.items():
        if line == prefix or line.startswith(prefix + ("" if prefix.endswith(("/", ".")) else " ")):
            return Command("skip", argv, cwd, reason)
    raise AssertionError(f"{line}: the docs test does not know how to run this command")


def shell_plan(text: str) -> list[Command]:
    """Every command of a shell block, classified."""
    cwd, plan = ROOT, []
    for argv in commands(text):
        command = classify(argv, cwd)
        if command.kind == "cd":
            cwd = command.cwd
            continue
        plan.append(command)
    return plan


def first_of_sweeps(overrides: Sequence[str]) -> list[str]:
    """A multirun's overrides with each sweep (``a=1,2``, ``range(...)``) by its first value."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    out = []
    for text, override in zip(overrides, parsed, strict=True):
        if override.is_interval_sweep():  # interval(0.1, 10): a value inside it
            out.append(f"{override.get_key_element()}={override.value().start}")
        elif override.is_sweep_override():
            first = next(iter(override.sweep_string_iterator()))
            out.append(f"{override.get_key_element()}={first}")
        else:
            out.append(text)
    return out


def train_overrides(argv: Sequence[str]) -> tuple[list[str], str | None, str | None]:
    """``(overrides, config_dir, config_name)`` of a ``python -m lossmix.train`` command."""
    args = list(argv[3:] if argv[0] == "python" else argv[1:])
    overrides: list[str] = []
    config_dir = config_name = None
    while args:
        arg = args.pop(0)
        if arg in ("-m", "--multirun"):
            continue
        if arg in ("--cfg", "-c", "--package", "-p"):
            args.pop(0)
        elif arg in ("--config-dir", "-cd"):
            config_dir = args.pop(0)
        elif arg in ("--config-name", "-cn"):
            config_name = args.pop(0)
        else:
            overrides.append(arg)
    return first_of_sweeps(overrides), config_dir, config_name


def compose_and_check(argv: Sequence[str], cwd: Path) -> None:
    """Compose a training command's config and run the app's checks on it (``lossmix show``'s)."""
    from lossmix.app.cli import _console, show_config

    overrides, config_dir, config_name = train_overrides(argv)
    if config_dir is not None:
        config_dir = str(cwd / config_dir)
    with contextlib.redirect_stdout(io.StringIO()):
        show_config(_console(), overrides, config_name, config_dir)


def run_cli(argv: Sequence[str], cwd: Path) -> str:
    """Run a ``lossmix ...`` command in-process in ``cwd``; its output (status 0 required)."""
    from lossmix.app.cli import main

    out = io.StringIO()
    old = Path.cwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            status = main(list(argv[1:]))
    finally:
        os.chdir(old)
    assert status == 0, f"{' '.join(argv)} exited {status}:\n{out.getvalue()}"
    return out.getvalue()


# -- console blocks: a command and the output the page quotes --------------------------------
_BOX = re.compile(r"[│┃┏┓┗┛┡┩━─┌┐└┘├┤┼╇╈╋┳┻╭╮╰╯]+")


def normalise(text: str) -> str:
    """Table borders and runs of white space out, for comparing quoted output."""
    return " ".join(_BOX.sub(" ", text).split())


def console_sessions(text: str) -> list[tuple[str, list[str]]]:
    """``[(command, quoted output lines)]`` of a console block."""
    sessions: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("$ "):
            sessions.append((line[2:], []))
        elif sessions and line.strip():
            sessions[-1][1].append(line)
    return sessions


def matches(expected: str, actual: str) -> bool:
    """Whether a quoted line (``...``: anything) appears in the normalised output."""
    parts = [re.escape(normalise(p)) for p in expected.split("...")]
    return re.search(r".*?".join(parts), normalise(actual), re.S) is not None


_QUICK = {
    "trainer.max_epochs": "1",
    "trainer.limit_train_batches": "2",
    "trainer.limit_val_batches": "1",
    "trainer.enable_progress_bar": "false",
}


def run_app(argv: list[str], tmp: Path) -> str:
    """Run ``python -m lossmix.train`` (or an example app) in-process, on a tiny budget unless
    the command sets those keys itself; what it printed (``Error:`` lines included)."""
    script = argv[1] if argv[0] == "python" and argv[1].endswith(".py") else None
    args = argv[2:] if script else argv[3:]
    keys = {a.split("=", 1)[0].lstrip("+~") for a in args}
    extra = [f"++{k}={v}" for k, v in _QUICK.items() if k not in keys]
    out = io.StringIO()
    saved = sys.argv, list(sys.path)
    sys.argv = [script or "lossmix.train", *args, *extra, f"hydra.run.dir={tmp / 'run'}"]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            with contextlib.suppress(SystemExit):
                if script:
                    sys.path.insert(0, str((ROOT / script).parent))
                    runpy.run_path(str(ROOT / script), run_name="__main__")
                else:
                    from lossmix.train import main

                    main()
    finally:
        sys.argv, sys.path[:] = saved
    return out.getvalue()


def count(pages: Sequence[Path] = PAGES) -> Counter[str]:
    """Blocks and commands by what the test does with them."""
    found: Counter[str] = Counter()
    fence = re.compile(r"^```(\S*)\n(.*?)^```", re.M | re.S)
    for page in pages:
        for language, body in fence.findall(page.read_text(encoding="utf-8")):
            if language == "python":
                found["python blocks run"] += 1
            elif language == "yaml":
                found["yaml blocks loaded"] += 1
            elif language == "console":
                found["console commands run, output compared"] += len(console_sessions(body))
            elif language == "bash":
                for command in shell_plan(body):
                    label = {"compose": "shell commands composed", "run": "shell commands run"}
                    found[label.get(command.kind, f"shell commands skipped: {command.reason}")] += 1
            elif language.startswith("{"):
                found["Sphinx directives (rendered by the site build)"] += 1
            else:
                found[f"shown only ({language or 'no language'})"] += 1
    return found


if __name__ == "__main__":
    for what, n in sorted(count().items()):
        print(f"{n:4d}  {what}")
