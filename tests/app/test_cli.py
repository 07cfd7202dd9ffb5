"""The ``lossmix`` command in subprocesses: ``list`` and ``show``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

COMMANDS = {
    "list": ["list"],
    "list user losses": ["list", "--import", "lossmix.demo.custom_losses"],
    "list missing module": ["list", "--import", "no_such_losses_module"],
    "show": ["show", "loss/cls=ce", "+sampler@loss.cls.sampler=random", "loss.cls.sampler.num=64"],
    "show typo": ["show", "+loss.cls.gama=1.5"],
    "show unknown option": ["show", "loss/reg=nope"],
    # a user-registered loss: lossmix.imports is imported before the check (and the hint)
    "show custom": ["show", "experiment=custom"],
    "show custom typo": ["show", "experiment=custom", "loss.seg.epss=2"],
}


def _command() -> list[str]:
    found = shutil.which("lossmix", path=os.path.dirname(sys.executable))
    return [found] if found else [sys.executable, "-m", "lossmix.app.cli"]


# The commands but the first run one after another in one interpreter (each in its own would
# import torch and Lightning again, ~5 s of CPU each), in the order above: "list" has run
# before a command imports user losses. "list" itself runs the installed ``lossmix`` script.
DRIVER = """
import contextlib, io, json, sys
import lossmix.app.cli
done = {}
for name, argv in json.loads(sys.argv[1]):
    out, err, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = lossmix.app.cli.main(argv)
        except SystemExit as exit:
            code = exit.code
    done[name] = [out.getvalue(), err.getvalue(), code]
print(json.dumps(done))
"""


@pytest.fixture(scope="module")
def done():
    env = {**os.environ, "COLUMNS": "200"}
    rest = [(name, args) for name, args in COMMANDS.items() if name != "list"]
    script = subprocess.Popen(
        [*_command(), "list"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, json.dumps(rest)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    driven, errors = driver.communicate(timeout=300)
    assert driver.returncode == 0, errors[-3000:]
    results = {name: tuple(value) for name, value in json.loads(driven.strip().splitlines()[-1]).items()}
    return {"list": (*script.communicate(timeout=300), script.returncode), **results}


def test_list_shows_losses_samplers_arguments_and_summaries(done):
    out, err, code = done["list"]
    assert code == 0, err
    for name in ("FocalLoss", "GIoULoss", "DiceLoss", "RandomSampler", "OHEMSampler"):
        assert name in out
    assert "gamma=2.0" in out and "num=<required>" in out
    assert "Focal loss" in out
    import lossmix.mtl  # noqa: F401  (fills the aggregator registry)
    from lossmix.registry import AGGREGATORS

    assert f"Gradient aggregators ({len(AGGREGATORS)})" in out and "upgrad" in out and "c=0.4" in out
    assert "famo" in out and "lr=0.025" in out  # the cheap scalarizers are task weightings


def test_list_imports_user_modules_first(done):
    out, err, code = done["list user losses"]
    assert code == 0, err
    assert "LogCoshDiceLoss" in out and "soft_l1" in out
    assert "LogCoshDiceLoss" not in done["list"][0]
    out, err, code = done["list missing module"]
    assert code == 1 and "Traceback" not in err
    assert "could not import module 'no_such_losses_module'" in err


def test_show_prints_the_loss_yaml_and_the_term_table(done):
    out, err, code = done["show"]
    assert code == 0, err
    assert "type: CrossEntropyLoss" in out and "num: 64" in out
    for column in ("term", "loss", "weight", "inputs", "sampler", "normalizer", "every"):
        assert column in out
    assert "type=RandomSampler, num=64" in out and "GIoULoss" in out


def test_show_imports_the_users_loss_module(done):
    out, err, code = done["show custom"]
    assert code == 0, err
    assert "type: LogCoshDiceLoss" in out and "soft_l1" in out


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("show typo", "Did you mean 'gamma'?"),
        (
            "show custom typo",
            "term 'seg' (LogCoshDiceLoss): unknown key 'epss' (loss.seg.epss). Did you mean 'eps'?",
        ),
        ("show unknown option", "Available options in 'loss/reg': giou, l1, smooth_l1"),
    ],
)
def test_show_errors_are_one_line(done, case, expected):
    _, err, code = done[case]
    assert code == 1
    assert "Traceback" not in err
    assert err.startswith("Error: ") and expected in err and len(err.strip().splitlines()) == 1


# -- in this process: self-describing losses, narrow terminals ----------------------------------
def test_list_wraps_at_80_columns_without_cutting_anything(capsys, monkeypatch):
    from lossmix.app import cli
    from lossmix.registry.registry import LOSSES, SAMPLERS, WEIGHTINGS

    monkeypatch.setenv("COLUMNS", "80")
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    from rich.cells import cell_len  # what a terminal shows: f̂ is one cell, two code points

    assert "…" not in out and max(cell_len(line) for line in out.splitlines()) <= 80
    for registry in (LOSSES, SAMPLERS, WEIGHTINGS):
        for name in registry.names():
            assert name in out, name
    assert "inputs: pred, target, ignore_index?" in out  # CrossEntropyLoss's own inputs


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("FocalLoss", ["(N, C) float logits", "(N,) int64 class indices", "Returns with reduction='none'"]),
        (
            "GIoULoss",
            [
                "(..., 4) float boxes (x1, y1, x2, y2)",
                "In a term: {type: GIoULoss, inputs: {pred: <key>, target: <key>}}",
            ],
        ),
        ("R1GradientPenalty", ["discriminator", "(N, C, H, W) float real images", "loss_scaler"]),
        ("RandomSampler", ["num", "pos_fraction", "<required>"]),
    ],
)
def test_show_name_describes_inputs_shapes_and_arguments(name, expected, capsys, monkeypatch):
    from lossmix.app import cli

    monkeypatch.setenv("COLUMNS", "200")
    assert cli.main(["show", name]) == 0
    out = capsys.readouterr().out
    for text in expected:
        assert text in out, text


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["show", "FocalLos"],
            "'FocalLos' is no registered loss, sampler, task weighting, gradient aggregator or "
            "schedule kind, nor a Hydra override (key=value). Did you mean 'FocalLoss'",
        ),
        (["show", "FocalLoss", "loss/cls=ce"], "'FocalLoss' is not an override (key=value)"),
    ],
)
def test_show_name_errors_are_one_line(argv, expected, capsys):
    from lossmix.app import cli

    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and expected in err and err.count("\n") == 1
