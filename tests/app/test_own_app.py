"""The docs' "Your own Hydra app" (docs/hydra-app.md), as a user builds it: ``examples/own_app``
(its own model, data and config directory, lossmix's groups on the search path, the app
decorated with ``lossmix.app.runner.hydra_app``) gets the shipped app's one-line errors,
pre-flight check, outputs and resume. One subprocess run (the real entry point); the rest
in this process."""

from __future__ import annotations

import csv
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

from lossmix.app import cli

APP = Path(__file__).resolve().parents[2] / "examples" / "own_app"
TIMEOUT = 1800  # s: generous for a loaded 2-core machine
TINY = [
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=4",
    "+trainer.limit_val_batches=2",
    "+trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
]
QUIET = ["hydra/job_logging=none", "hydra/hydra_logging=none"]


@pytest.fixture
def app(monkeypatch):
    """Runs the example's ``train.py`` in this process as ``python train.py <argv>`` does:
    as ``__main__``, its directory first on the path (so ``my_app`` imports). Its
    ``lossmix.allow_targets("my_app")`` is undone afterwards."""
    monkeypatch.syspath_prepend(str(APP))
    monkeypatch.setattr("lossmix.registry.allowlist._user_allowed", [])

    def run(argv: list[str]) -> int:
        monkeypatch.setattr(sys, "argv", [str(APP / "train.py"), *QUIET, *argv])
        monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
        try:
            runpy.run_path(str(APP / "train.py"), run_name="__main__")
        except SystemExit as exit:
            return int(exit.code or 0)
        finally:
            GlobalHydra.instance().clear()
        return 0

    return run


def run_in_process(app, argv: list[str], capsys, monkeypatch) -> tuple[int, str, str]:
    code = app(argv)
    out, err = capsys.readouterr()
    return code, out, err


def rows_of(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "csv" / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_the_example_app_trains_and_writes_every_output(tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("HYDRA_FULL_ERROR", None)
    done = subprocess.run(
        [sys.executable, str(APP / "train.py"), f"hydra.run.dir={run_dir}", *TINY],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    columns = set(rows_of(run_dir)[0])
    assert {
        "train/loss/cls",
        "train/loss/reg",
        "train/loss/iou",
        "val/loss/iou",
        "train/loss_epoch",
    } <= columns
    assert (run_dir / "loss_curves.png").stat().st_size > 1000
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["hyper_parameters"]["loss"]["iou"]["type"] == "GIoULoss"
    assert "per-term summary" in done.stdout and f"Run directory: {run_dir}" in done.stdout
    for term in ("cls", "reg", "iou", "total"):
        assert f"│ {term} " in done.stdout


ERRORS = {
    "typo": (
        ["loss.cls.gama=1.5"],
        "term 'cls' (FocalLoss): unknown key 'gama' (loss.cls.gama). Did you mean 'gamma'?",
    ),
    "appended typo": (["+loss.cls.gama=1.5"], "unknown key 'gama' (loss.cls.gama). Did you mean 'gamma'?"),
    "wrong type": (
        ["loss.cls.gamma=abc"],
        "term 'cls' (FocalLoss): gamma='abc' is a str, but gamma expects float",
    ),
    "unknown option": (["loss/reg=nope"], "Available options in 'loss/reg': giou, huber, l1, smooth_l1."),
    "wrong input key, found by the pre-flight batch": (
        ["loss.reg.inputs.target=box_target"],
        "term 'reg': input 'target' wants key 'box_target', which is not in the outputs or the batch",
    ),
    "model key typo": (["+model.hiden=3"], "model"),
    "a callback setting without the callback": (
        ["+callbacks.loss_weights.schedules.reg.end=200"],
        "add the callback first: +callback@callbacks.loss_weights=loss_weights",
    ),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_mistakes_in_the_own_app_are_one_line(app, tmp_path, case, capsys, monkeypatch):
    overrides, expected = ERRORS[case]
    code, _, err = run_in_process(app, [f"hydra.run.dir={tmp_path}", *TINY, *overrides], capsys, monkeypatch)
    errors = [line for line in err.splitlines() if line.startswith("Error: ")]
    assert code == 1 and "Traceback" not in err, err
    assert len(errors) == 1 and expected in errors[0], err
    assert not (tmp_path / "checkpoints").exists()  # nothing trained
    if case == "model key typo":
        assert "'hiden'" in errors[0] and "hidden" in errors[0]


def test_the_own_app_resumes_from_its_last_checkpoint(app, tmp_path, capsys, monkeypatch):
    first, resumed = tmp_path / "first", tmp_path / "resumed"
    code, _, err = run_in_process(app, [f"hydra.run.dir={first}", *TINY], capsys, monkeypatch)
    assert code == 0, err
    last = first / "checkpoints" / "last.ckpt"
    argv = [f"hydra.run.dir={resumed}", *TINY, "trainer.max_epochs=2", f"ckpt_path={last}"]
    code, out, err = run_in_process(app, argv, capsys, monkeypatch)
    assert code == 0, err
    epochs = {r["epoch"] for r in rows_of(resumed) if r.get("train/loss/cls")}
    assert epochs == {"1"}  # the resumed run trained the second epoch only
    assert "per-term summary" in out


def test_lossmix_show_reads_the_own_apps_config_tree(capsys, monkeypatch):
    monkeypatch.chdir(APP)
    monkeypatch.setattr("lossmix.registry.allowlist._user_allowed", [])
    code = cli.main(
        ["show", "--config-dir", "conf", "--config-name", "config", "--allow", "my_app", "loss/reg=huber"]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "_target_: torch.nn.HuberLoss" in out and "GIoULoss" in out and "FocalLoss" in out
    code = cli.main(
        ["show", "--config-dir", "conf", "--config-name", "config", "--allow", "my_app", "loss.cls.gama=1"]
    )
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "Did you mean 'gamma'?" in err
    code = cli.main(["show", "--config-dir", "conf", "loss/reg=huber"])
    err = capsys.readouterr().err
    assert code == 1 and "--config-dir conf needs --config-name" in err and "config" in err
    code = cli.main(["show", "--config-dir", "conf", "--config-name", "config"])  # my_app not allowed
    err = capsys.readouterr().err
    assert code == 1 and "lossmix.allow_targets('my_app')" in err
